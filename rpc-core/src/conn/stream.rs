//! [`StreamCore`]: one stream's state, shared by its connection's driver, the local sender
//! ([`StreamSender`](crate::StreamSender)) and the local consumer
//! ([`Streaming`](crate::Streaming)).
//!
//! Sending: the sender encodes each message straight into the stream's buffer, as far as the
//! peer's credit and the buffer's size allow, and puts the stream in line for the driver when
//! the buffer was empty; the driver moves the buffer to the socket a turn at a time. A fast
//! producer therefore costs a lock and an encode per message, and wakes the driver once per
//! batch, however many messages the batch holds.
//!
//! Receiving: the driver hands the consumer the messages of each socket read together; the
//! consumer takes them all at once and grants their credit back as it reads them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use tokio::sync::Notify;

use super::shared::{Shared, window_update};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::wire::{Frame, StreamMessages, varint};

/// How many bytes of encoded messages a stream's sender may have waiting for the driver: past
/// this, `send` waits until the driver has taken them. About what one socket write carries;
/// the peer's credit bounds what is in flight beyond it.
pub(crate) const SEND_BUFFER: usize = 64 * 1024;

/// How many bytes a sender with more messages ready encodes before it tells the driver.
const SCHEDULE_AT: usize = SEND_BUFFER / 2;

/// How many messages a sender encodes under one hold of its stream's lock.
const MESSAGES_PER_LOCK: usize = 64;

/// The messages a sender has for [`StreamCore::poll_send`], one at a time.
pub(crate) trait Messages {
    /// Whether there is another message to send.
    fn has_next(&mut self) -> bool;
    /// Appends the next message to `buf` as a `STREAM_MESSAGE` frame of stream `id` and moves
    /// past it, returning the frame's flow-control cost; or, if that cost would be over
    /// `max`, appends nothing and returns `Err` with it. Called only after `has_next`.
    fn encode_next(&mut self, id: u64, max: usize, buf: &mut BytesMut) -> Result<usize, usize>;
}

/// Received messages: runs of whole frames, read out by the consumer.
pub(crate) type Received = StreamMessages;

/// One stream's state.
#[derive(Debug)]
pub(crate) struct StreamCore {
    pub(crate) id: u64,
    pub(crate) shared: Arc<Shared>,
    send: Mutex<SendHalf>,
    recv: Mutex<RecvHalf>,
    /// Credit granted back to the peer for this stream, beyond the initial window.
    pub(crate) granted: AtomicU64,
    /// The call is over on this connection: nothing more is routed to it.
    finished: AtomicBool,
    /// How the call ended, once it has.
    outcome: OnceLock<Result<(), Status>>,
    ended: Notify,
}

#[derive(Debug)]
struct SendHalf {
    /// Encoded `STREAM_MESSAGE` frames the driver has not taken yet.
    buf: BytesMut,
    /// Their credit cost: the sum of their payload lengths (the frames without their length
    /// prefixes), which is what the peer counts against the connection's window.
    buf_cost: u64,
    /// Credit the peer granted this stream beyond its `INITIAL_WINDOW`, minus bytes encoded:
    /// the stream's credit is the window plus this.
    balance: i64,
    /// Whether the stream is in the driver's line (or the driver holds it).
    scheduled: bool,
    /// A sender waiting for credit or room.
    waiter: Option<Waker>,
    /// Nothing more may be sent, and why.
    closed: Option<Status>,
    /// The `STREAM_END` to write once the buffer has gone.
    end: Option<Frame>,
}

#[derive(Debug)]
struct RecvHalf {
    queue: VecDeque<Received>,
    /// The memory the queue holds, counted in the connection's input.
    held: usize,
    end: Option<Result<Metadata, Status>>,
    waiter: Option<Waker>,
    /// The consumer is gone: what arrives is consumed at once.
    detached: bool,
    /// The peer started the call's handler (or sent something of it, or never says).
    accepted: bool,
    /// The opener waiting to hear whether the call was accepted.
    accept_waiter: Option<Waker>,
}

/// What [`StreamCore::take`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// Everything buffered went; the stream is out of line until its sender adds more.
    Drained,
    /// The connection's credit ran out first: the stream stays in line.
    Blocked,
    /// The buffer and the stream's end went: this side's part of the call is over.
    Ended,
}

/// What a consumer finds when it polls.
#[derive(Debug)]
pub(crate) enum Recv {
    /// Messages, moved into the consumer's own queue.
    Messages,
    /// The end, after every message.
    End(Result<Metadata, Status>),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StreamCore {
    pub(crate) fn new(id: u64, shared: Arc<Shared>) -> Arc<StreamCore> {
        Arc::new(StreamCore {
            id,
            shared,
            send: Mutex::new(SendHalf {
                buf: BytesMut::new(),
                buf_cost: 0,
                balance: 0,
                scheduled: false,
                waiter: None,
                closed: None,
                end: None,
            }),
            recv: Mutex::new(RecvHalf {
                queue: VecDeque::new(),
                held: 0,
                end: None,
                waiter: None,
                detached: false,
                accepted: false,
                accept_waiter: None,
            }),
            granted: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            outcome: OnceLock::new(),
            ended: Notify::new(),
        })
    }

    // --- The sender's side. ---

    /// Encodes messages from `messages` into the stream's buffer, one after the other, as
    /// far as the stream's credit and the buffer's room allow: `Ready(Ok)` once `messages`
    /// has none left; otherwise, with a `cx`, registers its waker and is pending (what was
    /// encoded stays encoded). A message larger than the peer's frame limit fails with
    /// `RESOURCE_EXHAUSTED`, sending nothing of it.
    pub(crate) fn poll_send(
        self: &Arc<Self>,
        mut cx: Option<&mut Context<'_>>,
        messages: &mut impl Messages,
    ) -> Poll<Result<(), Status>> {
        // Messages encoded that the driver has not been told about.
        let mut unscheduled = false;
        loop {
            let mut send = lock(&self.send);
            // Read once per hold of the lock: the window only grows, and a limit that
            // changes mid-batch applies from the next.
            let window = self.shared.peer_window.load(Ordering::Acquire);
            let max = self.shared.peer_max_frame();
            let mut encoded = 0;
            let outcome = loop {
                if let Some(status) = &send.closed {
                    break Some(Poll::Ready(Err(status.clone())));
                }
                if !messages.has_next() {
                    break Some(Poll::Ready(Ok(())));
                }
                // An empty buffer takes one message whatever its size: a message larger than
                // the buffer still goes, alone.
                if window.saturating_add(send.balance) <= 0 || send.buf.len() >= SEND_BUFFER {
                    if let Some(cx) = cx.as_deref_mut() {
                        match &send.waiter {
                            Some(waker) if waker.will_wake(cx.waker()) => {}
                            _ => send.waiter = Some(cx.waker().clone()),
                        }
                    }
                    break Some(Poll::Pending);
                }
                let cost = match messages.encode_next(self.id, max, &mut send.buf) {
                    Ok(cost) => cost,
                    Err(cost) => {
                        break Some(Poll::Ready(Err(Status::resource_exhausted(format!(
                            "a stream message of {cost} bytes exceeds the peer's limit of {max} bytes"
                        )))));
                    }
                };
                send.balance -= cost as i64;
                send.buf_cost += cost as u64;
                encoded += 1;
                if encoded == MESSAGES_PER_LOCK {
                    // Others (the driver) get the lock now and then.
                    break None;
                }
            };
            unscheduled = (unscheduled || encoded > 0) && !send.scheduled;
            // While more messages follow at once, the driver is told only once a write's
            // worth has built up: woken for the first few, it would write them on their own
            // while this sender makes the rest, many small writes instead of a few large.
            let schedule = unscheduled && (outcome.is_some() || send.buf.len() >= SCHEDULE_AT);
            if schedule {
                send.scheduled = true;
                unscheduled = false;
            }
            drop(send);
            if schedule {
                let stream = Arc::clone(self);
                self.shared.with_outbox(|outbox| outbox.schedule(stream));
            }
            if let Some(outcome) = outcome {
                return outcome;
            }
        }
    }

    /// Ends this side of the stream with `end`, after the messages already buffered; or, with
    /// `jump`, at once, dropping them (past a deadline the call is over whatever is queued).
    /// Nothing is sent after it; a later end is ignored.
    pub(crate) fn finish_send(self: &Arc<Self>, end: Frame, jump: bool, why: Status) {
        let mut send = lock(&self.send);
        if send.closed.is_some() {
            return;
        }
        if jump {
            send.buf.clear();
            send.buf_cost = 0;
        }
        send.closed = Some(why);
        send.end = Some(end);
        if let Some(waker) = send.waiter.take() {
            waker.wake();
        }
        let schedule = !send.scheduled;
        send.scheduled = true;
        drop(send);
        if schedule {
            let stream = Arc::clone(self);
            self.shared.with_outbox(|outbox| outbox.schedule(stream));
        }
    }

    /// Nothing more is sent on this stream: what is buffered is dropped, and the sender's
    /// next `send` fails with `status`.
    pub(crate) fn close_send(&self, status: Status) {
        let mut send = lock(&self.send);
        send.buf.clear();
        send.buf_cost = 0;
        send.end = None;
        if send.closed.is_none() {
            send.closed = Some(status);
        }
        if let Some(waker) = send.waiter.take() {
            waker.wake();
        }
    }

    /// Whether sending is over.
    pub(crate) fn is_send_closed(&self) -> bool {
        lock(&self.send).closed.is_some()
    }

    // --- The driver's side of sending. ---

    /// The peer granted `increment` more bytes of credit for this stream, whose window is
    /// `window`. `None` if the credit would pass 2^63 - 1 bytes.
    pub(crate) fn add_credit(&self, increment: i64, window: i64) -> Option<()> {
        let mut send = lock(&self.send);
        let balance = send.balance.checked_add(increment)?;
        window.checked_add(balance)?;
        send.balance = balance;
        if let Some(waker) = send.waiter.take() {
            waker.wake();
        }
        Some(())
    }

    /// Wakes a sender waiting for credit (the peer's window for every stream grew).
    pub(crate) fn wake_sender(&self) {
        if let Some(waker) = lock(&self.send).waiter.take() {
            waker.wake();
        }
    }

    /// Moves buffered messages into `out`: all of them while `conn_credit` covers them, else
    /// whole messages while it lasts (the last may overdraw it); then the stream's end, if
    /// everything went and it has one. `conn_credit` is charged what was moved, counted as
    /// the peer counts it: in frame payload bytes, length prefixes not included. Sets `woke`
    /// if the sender was waiting for room and is woken.
    pub(crate) fn take(&self, out: &mut BytesMut, conn_credit: &mut i64, woke: &mut bool) -> Taken {
        let mut send = lock(&self.send);
        if !send.buf.is_empty() {
            let cost = send.buf_cost as i64;
            if cost <= *conn_credit {
                if out.is_empty() {
                    std::mem::swap(out, &mut send.buf);
                } else {
                    out.extend_from_slice(&send.buf);
                    send.buf.clear();
                }
                send.buf_cost = 0;
                *conn_credit -= cost;
            } else {
                let (cut, cost) = frames_within(&send.buf, *conn_credit);
                out.extend_from_slice(&send.buf[..cut]);
                send.buf.advance(cut);
                send.buf_cost -= cost;
                *conn_credit -= cost as i64;
            }
            if let Some(waker) = send.waiter.take() {
                waker.wake();
                *woke = true;
            }
            if !send.buf.is_empty() {
                return Taken::Blocked;
            }
        }
        match send.end.take() {
            Some(end) => {
                end.encode_unchecked(out);
                Taken::Ended
            }
            None => {
                send.scheduled = false;
                Taken::Drained
            }
        }
    }

    // --- Receiving. ---

    /// For the driver: hands `batch` to the consumer, leaving it empty. If the consumer is
    /// gone, returns the credit the messages used, for the driver to release.
    pub(crate) fn deliver(&self, batch: &mut Vec<Received>) -> Result<(), u64> {
        let held: usize = batch.iter().map(Received::held_bytes).sum();
        let mut recv = lock(&self.recv);
        if recv.detached || recv.end.is_some() {
            drop(recv);
            self.shared.release_input(held);
            return Err(batch.drain(..).map(|run| run.cost).sum());
        }
        recv.held += held;
        recv.queue.extend(batch.drain(..));
        if let Some(waker) = recv.waiter.take() {
            waker.wake();
        }
        if !recv.accepted {
            // A message from the handler: it has started.
            recv.accepted = true;
            if let Some(waker) = recv.accept_waiter.take() {
                waker.wake();
            }
        }
        Ok(())
    }

    /// For the driver: the peer has started the call's handler, or it never says so.
    pub(crate) fn accept(&self) {
        let mut recv = lock(&self.recv);
        recv.accepted = true;
        if let Some(waker) = recv.accept_waiter.take() {
            waker.wake();
        }
    }

    /// For the opener of a client's stream: `Ok` once the server has started the call's
    /// handler (or is known never to say so), the call's status if it ended first with an
    /// error (an unknown method, a refusal, a lost connection).
    pub(crate) fn poll_accepted(&self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let mut recv = lock(&self.recv);
        match &recv.end {
            _ if recv.accepted => return Poll::Ready(Ok(())),
            Some(Err(status)) => return Poll::Ready(Err(status.clone())),
            Some(Ok(_)) => return Poll::Ready(Ok(())),
            None => {}
        }
        if self.shared.peer_accepts() == Some(false) {
            return Poll::Ready(Ok(()));
        }
        match &recv.accept_waiter {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => recv.accept_waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// For the driver: the inbound side's end, read after the messages already delivered.
    /// The first end wins.
    pub(crate) fn end_recv(&self, end: Result<Metadata, Status>) {
        let mut recv = lock(&self.recv);
        if recv.end.is_none() {
            recv.end = Some(end);
            if let Some(waker) = recv.waiter.take() {
                waker.wake();
            }
            if let Some(waker) = recv.accept_waiter.take() {
                waker.wake();
            }
        }
    }

    /// For the consumer: moves what has arrived into `local`, or gives the end once every
    /// message has been taken, or registers `cx`'s waker.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>, local: &mut VecDeque<Received>) -> Poll<Recv> {
        let mut recv = lock(&self.recv);
        if !recv.queue.is_empty() {
            if local.is_empty() {
                std::mem::swap(local, &mut recv.queue);
            } else {
                local.extend(recv.queue.drain(..));
            }
            // Taken: the consumer reads them now.
            let held = std::mem::take(&mut recv.held);
            drop(recv);
            self.shared.release_input(held);
            return Poll::Ready(Recv::Messages);
        }
        if let Some(end) = recv.end.take() {
            // Kept as an end for `deliver`'s check: nothing is delivered after it.
            recv.end = Some(Err(Status::cancelled("the stream has ended")));
            return Poll::Ready(Recv::End(end));
        }
        match &recv.waiter {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => recv.waiter = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// How many received messages wait for the consumer here.
    pub(crate) fn queued(&self) -> usize {
        lock(&self.recv).queue.iter().map(|run| run.count as usize).sum()
    }

    /// For the consumer, once it is done: nothing more is delivered; returns the credit of
    /// the messages left unread, for the consumer to release.
    pub(crate) fn detach(&self) -> u64 {
        let mut recv = lock(&self.recv);
        recv.detached = true;
        recv.waiter = None;
        let held = std::mem::take(&mut recv.held);
        let credit = recv.queue.drain(..).map(|run| run.cost).sum();
        drop(recv);
        self.shared.release_input(held);
        credit
    }

    /// For the consumer: it has taken `bytes` of messages. They are granted back to the peer
    /// for the stream (while it is open) and for the connection.
    pub(crate) fn grant(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        if !self.finished.load(Ordering::Acquire) {
            self.granted.fetch_add(bytes, Ordering::AcqRel);
            let id = self.id;
            self.shared.with_outbox(|outbox| {
                if outbox.closed.is_none() {
                    // A window update is a few bytes: below any limit.
                    let _ = outbox.queue(&window_update(id, bytes));
                }
            });
        }
        self.shared.release_connection_credit(bytes);
    }

    // --- The call's end. ---

    /// Whether the call is over on this connection.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.load(Ordering::Acquire)
    }

    /// The call is over on this connection: nothing more is routed to it.
    pub(crate) fn set_finished(&self) {
        self.finished.store(true, Ordering::Release);
    }

    /// Ends the stream both ways with `status` (the connection failed, the call was
    /// cancelled): the consumer reads it as the end (unless it had one), and sending stops.
    pub(crate) fn abort(&self, status: Status) {
        self.set_finished();
        self.complete(Err(status.clone()));
        self.end_recv(Err(status.clone()));
        self.close_send(status);
    }

    /// Records how the call ended (the first report wins).
    pub(crate) fn complete(&self, result: Result<(), Status>) {
        if self.outcome.set(result).is_ok() {
            self.ended.notify_waiters();
        }
    }

    /// Waits until the call has ended; how it ended.
    pub(crate) async fn completed(&self) -> Result<(), Status> {
        loop {
            let notified = self.ended.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = self.outcome.get() {
                return result.clone();
            }
            notified.await;
        }
    }
}

impl Drop for StreamCore {
    /// Messages nobody took are no longer held.
    fn drop(&mut self) {
        let recv = self.recv.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.shared.release_input(std::mem::take(&mut recv.held));
    }
}

/// How many bytes of whole frames at the front of `buf` fit within `credit`, the last one
/// allowed to overdraw it (at least one frame, when `credit` is above zero), and their cost
/// (their payload lengths).
fn frames_within(buf: &[u8], credit: i64) -> (usize, u64) {
    let (mut at, mut cost) = (0, 0);
    while (cost as i64) < credit && at < buf.len() {
        let Ok((len, prefix)) = varint::decode(&buf[at..]) else { break };
        at += prefix + len as usize;
        cost += len;
    }
    (at.min(buf.len()), cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_are_cut_within_the_credit_and_the_last_may_overdraw() {
        let mut buf = BytesMut::new();
        for _ in 0..3 {
            Frame::encode_message_with(1, 10, &mut buf, |b| b.extend_from_slice(&[0; 10]));
        }
        let frame = buf.len() / 3;
        let payload = (frame - 1) as u64;
        let credit = payload as i64;
        assert_eq!(frames_within(&buf, 0), (0, 0));
        assert_eq!(frames_within(&buf, 1), (frame, payload), "one frame overdraws");
        assert_eq!(frames_within(&buf, credit), (frame, payload));
        assert_eq!(frames_within(&buf, credit + 1), (2 * frame, 2 * payload));
        assert_eq!(frames_within(&buf, 1000), (3 * frame, 3 * payload), "a frame's cost is its payload");
    }
}
