//! The client's side of a connection: the [`Peer`] that routes answers back to the calls
//! waiting for them, and [`ClientConn`], what calls hold of a live connection.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::endpoint::EndpointInner;
use crate::conn::{Answer, Ended, Note, Peer, Reply, Shared, State, alarm_status, status_of};
use crate::status::Status;
use crate::wire::{CallMap, Frame, FrameKind, WireError};

/// How many calls a client runs at once on a connection until the server's `SETTINGS` say
/// otherwise: the protocol's default limit.
pub(crate) const DEFAULT_CALL_SLOTS: usize = 1024;

/// A live connection, as the calls that use it see it.
#[derive(Debug)]
pub(crate) struct ClientConn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) slots: CallSlots,
    established: AtomicBool,
    /// Woken when the connection is established or ends.
    settled: Notify,
}

impl ClientConn {
    pub(crate) fn new(shared: Arc<Shared>) -> Arc<ClientConn> {
        Arc::new(ClientConn {
            shared,
            slots: CallSlots::new(DEFAULT_CALL_SLOTS),
            established: AtomicBool::new(false),
            settled: Notify::new(),
        })
    }

    /// Whether the server answered with its preface: it speaks the protocol.
    pub(crate) fn is_established(&self) -> bool {
        self.established.load(Ordering::Acquire)
    }

    /// Whether new calls may go here: not closed, and no `GOAWAY` received.
    pub(crate) fn is_usable(&self) -> bool {
        self.shared.is_accepting()
    }

    /// Waits until the server has answered with its preface, or the connection has ended.
    pub(crate) async fn settled(&self) -> Result<(), Status> {
        loop {
            let notified = self.settled.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(status) = self.shared.lock().closed.clone() {
                return Err(status);
            }
            if self.is_established() {
                return Ok(());
            }
            notified.await;
        }
    }
}

/// The calls a client may still start on a connection: the server's `MAX_CONCURRENT_CALLS`,
/// less those in flight. A call takes a slot before it is sent and gives it back when its
/// answer (or end) arrives, or it is cancelled.
#[derive(Debug)]
pub(crate) struct CallSlots {
    in_use: AtomicUsize,
    limit: AtomicUsize,
    closed: AtomicBool,
    freed: Notify,
}

impl CallSlots {
    fn new(limit: usize) -> CallSlots {
        CallSlots {
            in_use: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            closed: AtomicBool::new(false),
            freed: Notify::new(),
        }
    }

    /// Takes a slot if one is free.
    pub(crate) fn try_acquire(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        let mut in_use = self.in_use.load(Ordering::Acquire);
        while in_use < limit {
            match self.in_use.compare_exchange_weak(in_use, in_use + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => in_use = now,
            }
        }
        false
    }

    /// Waits for a slot; `false` if the connection ended meanwhile.
    pub(crate) async fn acquire(&self) -> bool {
        loop {
            let notified = self.freed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_acquire() {
                return true;
            }
            notified.await;
        }
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        self.in_use.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_one();
    }

    fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
        self.freed.notify_waiters();
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.freed.notify_waiters();
    }
}

/// The client's side of the connection protocol, run by the connection's driver.
pub(crate) struct ClientPeer {
    conn: Arc<ClientConn>,
    endpoint: Weak<EndpointInner>,
    target: Arc<str>,
    handshake_timeout: Duration,
    /// Unary calls waiting for their answers.
    pending: CallMap<Reply>,
    goaway: Option<Status>,
}

impl ClientPeer {
    pub(crate) fn new(
        conn: Arc<ClientConn>,
        endpoint: Weak<EndpointInner>,
        target: Arc<str>,
        handshake_timeout: Duration,
    ) -> ClientPeer {
        ClientPeer { conn, endpoint, target, handshake_timeout, pending: CallMap::default(), goaway: None }
    }

    fn leave_endpoint(&self) {
        if let Some(endpoint) = self.endpoint.upgrade() {
            endpoint.connection_gone(&self.conn);
        }
    }
}

impl Peer for ClientPeer {
    fn on_established(&mut self, _state: &mut State) {
        self.conn.established.store(true, Ordering::Release);
        self.conn.settled.notify_waiters();
    }

    fn on_note(&mut self, state: &mut State, note: Note, _base: u64) {
        match note {
            Note::Sent { id, reply } => {
                self.pending.insert(id, reply);
            }
            Note::Opened(core) => state.streams.open(core),
            Note::Cancelled(id) => {
                if self.pending.remove(&id).is_some() {
                    self.conn.slots.release();
                } else if let Some(core) = state.streams.remove(id, &state.shared) {
                    core.abort(Status::cancelled("the call was cancelled"));
                    self.conn.slots.release();
                }
            }
            Note::Answered { .. } | Note::Unanswered(_) => {}
        }
    }

    fn on_call_frame(&mut self, state: &mut State, frame: Frame) -> Result<(), WireError> {
        match frame.kind {
            FrameKind::Response => {
                // No entry: the call was cancelled or timed out, and nobody waits.
                if let Some(reply) = self.pending.remove(&frame.call_id) {
                    self.conn.slots.release();
                    let answer = status_of(frame.header, frame.flags)
                        .map(|metadata| Answer { metadata, body: frame.body });
                    let _ = reply.send(answer);
                }
                Ok(())
            }
            FrameKind::StreamEnd => {
                let id = frame.call_id;
                if !state.streams.contains(id) {
                    return Ok(());
                }
                let end = status_of(frame.header, frame.flags);
                state.streams.end_inbound(id, end.clone(), &state.shared);
                if let Some(core) = state.streams.remove(id, &state.shared) {
                    let result = end.map(drop);
                    core.complete(result.clone());
                    core.close_send(match result {
                        Ok(()) => Status::failed_precondition("the server has ended the call"),
                        Err(status) => status,
                    });
                    self.conn.slots.release();
                }
                Ok(())
            }
            FrameKind::StreamAccept => {
                // For a call no longer here: nobody waits.
                state.streams.accept(frame.call_id);
                Ok(())
            }
            FrameKind::Request | FrameKind::StreamOpen => {
                Err(WireError::Protocol("a server sent a frame that only clients send"))
            }
            // Only clients cancel: a server's CANCEL means nothing.
            _ => Ok(()),
        }
    }

    fn on_stream_ended(&mut self, _state: &mut State, _id: u64) {
        // Our half-close went out: the call goes on until the server ends it.
    }

    fn on_max_concurrent_calls(&mut self, max: u64) {
        self.conn.slots.set_limit(usize::try_from(max).unwrap_or(usize::MAX));
    }

    fn on_goaway(&mut self, state: &mut State, status: Status) {
        tracing::debug!(target = %self.target, %status, "server sent GOAWAY");
        state.shared.stop_accepting();
        self.goaway = Some(status);
        self.leave_endpoint();
    }

    fn in_flight(&self, state: &State) -> usize {
        self.pending.len() + state.streams.len()
    }

    fn on_idle(&mut self, state: &mut State) -> Result<bool, WireError> {
        // New calls go to a new connection; this one closes once nothing is in flight (at
        // once, unless a call slipped in before it stopped taking them).
        tracing::debug!(target = %self.target, "closing an idle connection");
        state.shared.stop_accepting();
        self.leave_endpoint();
        Ok(false)
    }

    fn is_done(&self, state: &State) -> bool {
        // Draining after a GOAWAY, or every handle on the channel is gone: done once every
        // call sent here has its answer.
        !state.shared.is_accepting() && self.pending.is_empty() && state.streams.len() == 0
    }

    fn end_status(&self, ended: &Ended) -> Status {
        match ended {
            Ended::Drained | Ended::Closed => match &self.goaway {
                Some(goaway) => Status::unavailable(format!("server went away: {}", goaway.message())),
                None => Status::unavailable("connection closed by the server"),
            },
            Ended::Failed(WireError::PrefaceTimeout) => Status::unavailable(format!(
                "{} did not answer with a preface within {:?}",
                self.target, self.handshake_timeout
            )),
            // The server broke a rule of the protocol: the call failed on its account.
            Ended::Failed(err @ (WireError::Protocol(_) | WireError::FlowControl { .. })) => {
                Status::internal(err.to_string())
            }
            Ended::Failed(err) => Status::unavailable(format!("connection failed: {err}")),
            Ended::Unresponsive(timeout) => Status::unavailable(format!(
                "keepalive ping unanswered for {timeout:?}: connection presumed dead"
            )),
            Ended::TimedOut(alarm) => alarm_status(*alarm),
        }
    }

    fn on_closed(&mut self, _state: &mut State, status: &Status) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(status.clone()));
        }
        self.conn.slots.close();
        self.conn.settled.notify_waiters();
    }
}
