//! What a connection shares with the tasks that use it: the [`Outbox`] where they put their
//! frames (encoded straight into the bytes that go to the socket), and the counters that
//! stream consumers update when they grant credit back.
//!
//! Many tasks produce frames (callers, handlers, stream senders and consumers); one task,
//! the connection's driver, writes them. A producer locks the outbox, encodes its frame into
//! it, and wakes the driver if nothing else has since it last looked; the driver takes the
//! whole outbox at once (swapping buffers, not copying) and writes it. The lock is held only
//! to encode one frame, or to swap.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::sync::oneshot;

use super::budget::{ConnInput, InputBudget};
use super::stream::StreamCore;
use crate::metadata::Metadata;
use crate::status::Status;
use crate::wire::{
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_SIZE, Frame, FrameKind, Header, MIN_STREAM_WINDOW, WireError,
};

/// Where a unary call's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<Answer, Status>>;

/// A unary call's successful answer: the response's metadata and body. (A failed one is the
/// [`Status`], with the response's metadata on it.)
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) metadata: Metadata,
    pub(crate) body: Bytes,
}

/// What a producer tells the driver along with its frames, in order with them.
#[derive(Debug)]
pub(crate) enum Note {
    /// Client: a unary call went out; its answer goes to `reply`.
    Sent { id: u64, reply: Reply },
    /// Client: a stream was opened (its `STREAM_OPEN` is queued).
    Opened(Arc<StreamCore>),
    /// Client: the call is abandoned (its `CANCEL` is queued).
    Cancelled(u64),
    /// Server: a unary call was answered; its answer ends `end` bytes into the outbox.
    Answered { id: u64, end: usize },
    /// Server: a call's task ended without an answer (it was cancelled, or failed outside
    /// its handler).
    Unanswered(u64),
}

/// The peer's limits on what we send, from its `SETTINGS`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SendLimits {
    pub(crate) max_frame: usize,
    pub(crate) max_header: usize,
}

impl Default for SendLimits {
    fn default() -> Self {
        SendLimits { max_frame: DEFAULT_MAX_FRAME_SIZE, max_header: DEFAULT_MAX_HEADER_SIZE }
    }
}

impl SendLimits {
    /// Checks a frame's header and payload sizes against the peer's limits.
    pub(crate) fn check(&self, header_len: usize, payload_len: usize) -> Result<(), WireError> {
        if header_len > self.max_header {
            return Err(WireError::HeaderTooLarge { len: header_len as u64, max: self.max_header });
        }
        if payload_len > self.max_frame {
            return Err(WireError::FrameTooLarge { len: payload_len as u64, max: self.max_frame });
        }
        Ok(())
    }
}

/// The frames waiting for the driver, and what goes with them.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Encoded frames, in order: control frames, unary requests and answers, stream opens
    /// and ends. Stream messages wait in their streams' own buffers.
    pub(crate) buf: BytesMut,
    pub(crate) notes: Vec<Note>,
    /// Streams whose buffers hold messages (or their end) for the driver to take.
    pub(crate) ready: Vec<Arc<StreamCore>>,
    pub(crate) limits: SendLimits,
    /// Set once the connection is over: nothing more is taken, and why.
    pub(crate) closed: Option<Status>,
    /// Whether anything was added since the driver last took the outbox.
    dirty: bool,
    /// The id of the next call a client opens here: ids go out in increasing order because
    /// they are taken under the lock the frames are queued under.
    next_call_id: u64,
    /// Whether the driver needs no waking: it has been woken already, or it is running and
    /// will look again before it waits.
    notified: bool,
}

impl Outbox {
    fn new() -> Outbox {
        Outbox {
            buf: BytesMut::new(),
            notes: Vec::new(),
            ready: Vec::new(),
            limits: SendLimits::default(),
            closed: None,
            dirty: false,
            notified: false,
            next_call_id: 1,
        }
    }

    /// A client's id for the call it is about to queue here: greater than every id queued
    /// before it (docs/PROTOCOL.md §7).
    pub(crate) fn next_call_id(&mut self) -> u64 {
        let id = self.next_call_id;
        self.next_call_id += 1;
        id
    }

    /// Queues a frame; fails, queuing nothing, if it is over the peer's limits.
    pub(crate) fn queue(&mut self, frame: &Frame) -> Result<(), WireError> {
        self.limits.check(frame.header.encoded_len(), frame.payload_len())?;
        frame.encode_unchecked(&mut self.buf);
        self.dirty = true;
        Ok(())
    }

    /// Queues a frame whose body `write_body` encodes straight into the outbox: `body_len`
    /// bytes. Fails, queuing nothing, if it is over the peer's limits.
    pub(crate) fn queue_with(
        &mut self,
        kind: FrameKind,
        flags: u8,
        id: u64,
        header: &Header,
        body_len: usize,
        write_body: impl FnOnce(&mut BytesMut),
    ) -> Result<(), WireError> {
        let header_len = header.encoded_len();
        self.limits.check(header_len, Frame::payload_len_of(id, header_len, body_len))?;
        Frame::encode_parts(kind, flags, id, header, header_len, body_len, &mut self.buf, write_body);
        self.dirty = true;
        Ok(())
    }

    /// Tells the driver something, in order with the frames queued so far.
    pub(crate) fn note(&mut self, note: Note) {
        self.notes.push(note);
        self.dirty = true;
    }

    /// Puts a stream with data to send in line for the driver.
    pub(crate) fn schedule(&mut self, stream: Arc<StreamCore>) {
        self.ready.push(stream);
        self.dirty = true;
    }

    /// How many bytes of frames wait here.
    pub(crate) fn len(&self) -> usize {
        self.buf.len()
    }
}

/// The state a connection shares with every task that uses it.
#[derive(Debug)]
pub(crate) struct Shared {
    outbox: Mutex<Outbox>,
    /// The driver's waker.
    driver: AtomicWaker,
    /// The peer's `INITIAL_WINDOW`: every stream's send credit is this plus its own balance,
    /// so a new value applies to all streams at once.
    pub(crate) peer_window: AtomicI64,
    /// The credit we grant each stream, and the whole connection.
    pub(crate) stream_window: u64,
    pub(crate) connection_window: u64,
    /// Connection-level receive accounting: bytes of stream messages received (kept by the
    /// driver), and granted back beyond the initial window (kept by whoever grants).
    pub(crate) conn_received: AtomicU64,
    pub(crate) conn_granted: AtomicU64,
    /// Bytes consumed and not yet granted back at connection level.
    conn_unreleased: AtomicU64,
    /// Whether new calls may start here: a client stops at the server's `GOAWAY`, a server
    /// when it drains.
    accepting: AtomicBool,
    /// The peer's `MAX_FRAME_SIZE`, for stream senders (who check it without the outbox).
    peer_max_frame: AtomicUsize,
    /// The outbox's length as of its last change, readable without the lock.
    queued: AtomicUsize,
    /// Received bytes held for the tasks that use the connection (docs/PROTOCOL.md §8.5).
    pub(crate) input: ConnInput,
    /// Whether the peer sends `STREAM_ACCEPT`s: not known yet, yes, or no.
    peer_accepts: AtomicU8,
}

/// [`Shared::peer_accepts`] before the peer's `SETTINGS`.
const ACCEPTS_UNKNOWN: u8 = 0;
const ACCEPTS_YES: u8 = 1;
const ACCEPTS_NO: u8 = 2;

impl Shared {
    /// The state of a connection granting `stream_window` and `connection_window`, within
    /// the server-wide input budget `server`, if any. The connection holds at most twice its
    /// window of received bytes for its consumers (real bytes, bookkeeping included).
    pub(crate) fn new(
        stream_window: u64,
        connection_window: u64,
        server: Option<Arc<InputBudget>>,
    ) -> Arc<Shared> {
        let input_limit = usize::try_from(connection_window.saturating_mul(2)).unwrap_or(usize::MAX);
        Arc::new(Shared {
            outbox: Mutex::new(Outbox::new()),
            driver: AtomicWaker::new(),
            peer_window: AtomicI64::new(MIN_STREAM_WINDOW as i64),
            stream_window,
            connection_window,
            conn_received: AtomicU64::new(0),
            conn_granted: AtomicU64::new(0),
            conn_unreleased: AtomicU64::new(0),
            accepting: AtomicBool::new(true),
            peer_max_frame: AtomicUsize::new(DEFAULT_MAX_FRAME_SIZE),
            queued: AtomicUsize::new(0),
            input: ConnInput::new(input_limit, server),
            peer_accepts: AtomicU8::new(ACCEPTS_UNKNOWN),
        })
    }

    /// Whether the peer sends `STREAM_ACCEPT`s: `None` until its `SETTINGS` say.
    pub(crate) fn peer_accepts(&self) -> Option<bool> {
        match self.peer_accepts.load(Ordering::Acquire) {
            ACCEPTS_UNKNOWN => None,
            value => Some(value == ACCEPTS_YES),
        }
    }

    /// For the driver: the peer's `SETTINGS` say whether it sends `STREAM_ACCEPT`s. Only the
    /// first word counts; returns whether this was it.
    pub(crate) fn learn_peer_accepts(&self, accepts: bool) -> bool {
        let value = if accepts { ACCEPTS_YES } else { ACCEPTS_NO };
        self.peer_accepts
            .compare_exchange(ACCEPTS_UNKNOWN, value, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// `bytes` of received input are no longer held; wakes the driver if it stopped reading
    /// for holding too much.
    pub(crate) fn release_input(&self, bytes: usize) {
        if self.input.sub(bytes) {
            self.driver.wake();
        }
    }

    /// The peer's frame limit.
    pub(crate) fn peer_max_frame(&self) -> usize {
        self.peer_max_frame.load(Ordering::Relaxed)
    }

    /// Applies the peer's limits to everything sent from now on.
    pub(crate) fn set_limits(&self, limits: SendLimits) {
        self.peer_max_frame.store(limits.max_frame, Ordering::Relaxed);
        self.lock().limits = limits;
    }

    /// Runs `f` on the locked outbox, then wakes the driver if `f` gave it new work it has
    /// not been woken for.
    pub(crate) fn with_outbox<R>(&self, f: impl FnOnce(&mut Outbox) -> R) -> R {
        let mut outbox = self.lock();
        let result = f(&mut outbox);
        self.queued.store(outbox.buf.len(), Ordering::Relaxed);
        let wake = outbox.dirty && !outbox.notified;
        if wake {
            outbox.notified = true;
        }
        drop(outbox);
        if wake {
            self.driver.wake();
        }
        result
    }

    /// The outbox, locked (a poisoned lock is still used: the outbox holds bytes and lists,
    /// whose every state is valid).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// For the driver: registers its waker, and takes the outbox's new work: the frames (into
    /// `out`, by swapping when `out` is empty), the notes and the ready streams.
    pub(crate) fn take(
        &self,
        waker: &std::task::Waker,
        out: &mut BytesMut,
        notes: &mut Vec<Note>,
        ready: &mut Vec<Arc<StreamCore>>,
    ) -> usize {
        self.driver.register(waker);
        let mut outbox = self.lock();
        outbox.dirty = false;
        let moved = outbox.buf.len();
        if out.is_empty() {
            std::mem::swap(out, &mut outbox.buf);
        } else {
            out.extend_from_slice(&outbox.buf);
            outbox.buf.clear();
        }
        self.queued.store(0, Ordering::Relaxed);
        std::mem::swap(notes, &mut outbox.notes);
        ready.append(&mut outbox.ready);
        moved
    }

    /// Queues a frame for the driver, from the driver (which takes the outbox before it
    /// writes, so it is not woken).
    pub(crate) fn queue_quietly(&self, frame: &Frame) -> Result<(), WireError> {
        let mut outbox = self.lock();
        let queued = outbox.queue(frame);
        self.queued.store(outbox.buf.len(), Ordering::Relaxed);
        queued
    }

    /// Bytes of frames waiting in the outbox, as of its last change.
    pub(crate) fn queued_len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// For the driver, as it starts a poll: producers need not wake it until it is done.
    pub(crate) fn driver_running(&self) {
        self.lock().notified = true;
    }

    /// For the driver, as it is about to wait: from now on producers wake it. Returns
    /// `false`, leaving them not to, if something came in since it last took the outbox: it
    /// must look again first.
    pub(crate) fn driver_waiting(&self) -> bool {
        let mut outbox = self.lock();
        if outbox.dirty {
            return false;
        }
        outbox.notified = false;
        true
    }

    /// Wakes the driver.
    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    /// Whether new calls may start on this connection.
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// No new calls start here from now on. Flipped under the outbox's lock, where calls
    /// check it as they queue: every call either went out before this, or sees it.
    pub(crate) fn stop_accepting(&self) {
        let _outbox = self.lock();
        self.accepting.store(false, Ordering::Release);
    }

    /// A consumer has taken `bytes` of stream messages: they are granted back at connection
    /// level once half the window has built up, or as soon as any has when the peer's credit
    /// is down to half the window (idle streams holding part of the window must not leave an
    /// active one waiting for a threshold the rest can no longer reach).
    pub(crate) fn release_connection_credit(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let unreleased = self.conn_unreleased.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let half = self.connection_window / 2;
        let granted = self.conn_granted.load(Ordering::Acquire);
        let received = self.conn_received.load(Ordering::Acquire);
        let remaining = (self.connection_window + granted).saturating_sub(received);
        if unreleased < half && remaining > half {
            return;
        }
        let grant = self.conn_unreleased.swap(0, Ordering::AcqRel);
        if grant == 0 {
            return;
        }
        self.conn_granted.fetch_add(grant, Ordering::AcqRel);
        self.with_outbox(|outbox| {
            if outbox.closed.is_none() {
                // A window update is a few bytes: below any limit.
                let _ = outbox.queue(&window_update(0, grant));
            }
        });
    }
}

/// A `WINDOW_UPDATE` granting `increment` bytes on stream `id` (0: the connection).
pub(crate) fn window_update(id: u64, increment: u64) -> Frame {
    let mut frame = Frame::new(FrameKind::WindowUpdate, id);
    frame.header.window_increment = Some(increment);
    frame
}
