//! The driver's table of a connection's streams: received messages routed to their
//! consumers (checked against the credit granted, and handed over a batch per read), and
//! buffered messages moved to the socket in turns (as far as the connection's credit goes).
//!
//! Credit is counted in frame payload bytes of `STREAM_MESSAGE` frames, per stream and for
//! the whole connection (docs/PROTOCOL.md §8). What we grant is granted back by the
//! consumers themselves as they read ([`StreamCore::grant`]); what the peer grants is spent
//! by the senders per stream ([`StreamCore::poll_send`]) and here for the connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;

use super::shared::Shared;
use super::stream::{Received, StreamCore, Taken};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::wire::{CallMap, MIN_CONNECTION_WINDOW, StreamMessages, WireError};

/// Stream data is moved into the write buffer only while it holds less than this, keeping
/// frames queued behind it (unary answers, pings) within a chunk of the front.
pub(crate) const STREAM_WRITE_CHUNK: usize = 64 * 1024;

/// Received messages of a stream are handed to its consumer at the end of each read, or as
/// soon as this many bytes of them have come.
const INBOUND_BATCH_BYTES: u64 = 32 * 1024;

/// One stream, as the driver sees it.
struct Entry {
    core: Arc<StreamCore>,
    /// Bytes of messages received on it.
    received: u64,
    /// Messages received in the current read, handed over together at its end.
    pending: Vec<Received>,
    pending_cost: u64,
}

/// The streams of one connection, owned by its driver.
pub(crate) struct Streams {
    entries: CallMap<Entry>,
    /// Streams with messages pending for their consumers.
    dirty: Vec<u64>,
    /// Streams with data for the socket, in turn order.
    ready: VecDeque<Arc<StreamCore>>,
    /// Streams waiting for connection-level credit.
    blocked: Vec<Arc<StreamCore>>,
    /// Connection-level credit the peer granted us, minus bytes sent.
    conn_send_credit: i64,
    /// The credit we grant each stream and the connection, and the one-message overdraft
    /// a sender is allowed (our frame limit).
    stream_window: u64,
    connection_window: u64,
    overdraft: u64,
    /// The peer's stream window grew since the senders were last woken.
    window_grew: bool,
}

impl Streams {
    pub(crate) fn new(stream_window: u64, connection_window: u64, max_frame_size: usize) -> Streams {
        Streams {
            entries: CallMap::default(),
            dirty: Vec::new(),
            ready: VecDeque::new(),
            blocked: Vec::new(),
            conn_send_credit: MIN_CONNECTION_WINDOW as i64,
            stream_window,
            connection_window,
            overdraft: max_frame_size as u64,
            window_grew: false,
        }
    }

    /// Whether stream `id` is here.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// How many streams are here.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Routes stream `core.id` here from now on.
    pub(crate) fn open(&mut self, core: Arc<StreamCore>) {
        if core.shared.peer_accepts() == Some(false) {
            // Its opener would wait for a STREAM_ACCEPT that never comes.
            core.accept();
        }
        let entry = Entry { core, received: 0, pending: Vec::new(), pending_cost: 0 };
        self.entries.insert(entry.core.id, entry);
    }

    /// The peer started stream `id`'s handler (`STREAM_ACCEPT`).
    pub(crate) fn accept(&mut self, id: u64) {
        if let Some(entry) = self.entries.get(&id) {
            entry.core.accept();
        }
    }

    /// The peer sends no `STREAM_ACCEPT`s: every stream counts as accepted.
    pub(crate) fn accept_all(&mut self) {
        for entry in self.entries.values() {
            entry.core.accept();
        }
    }

    /// Stops routing stream `id` (its call is over): what it still has pending goes to its
    /// consumer first.
    pub(crate) fn remove(&mut self, id: u64, shared: &Shared) -> Option<Arc<StreamCore>> {
        let mut entry = self.entries.remove(&id)?;
        deliver(&mut entry, shared);
        entry.core.set_finished();
        Some(entry.core)
    }

    /// Stream messages arrived: checked against the credit granted, and kept for the
    /// stream's consumer, who gets them at the next [`deliver`](Self::deliver). Messages
    /// nobody will read have their credit released at once.
    pub(crate) fn on_message(&mut self, messages: StreamMessages, shared: &Shared) -> Result<(), WireError> {
        let (call_id, cost) = (messages.call_id, messages.cost);
        let received = shared.conn_received.fetch_add(cost, Ordering::AcqRel) + cost;
        let granted = shared.conn_granted.load(Ordering::Acquire);
        if received > self.connection_window + granted + self.overdraft {
            return Err(WireError::FlowControl { what: "connection window overrun" });
        }
        let Some(entry) = self.entries.get_mut(&call_id) else {
            // Nobody will read it: consumed now.
            shared.release_connection_credit(cost);
            return Ok(());
        };
        entry.received += cost;
        let granted = entry.core.granted.load(Ordering::Acquire);
        if entry.received > self.stream_window + granted + self.overdraft {
            return Err(WireError::FlowControl { what: "stream window overrun" });
        }
        if entry.pending.is_empty() {
            self.dirty.push(call_id);
        }
        shared.input.add(messages.held_bytes());
        entry.pending.push(messages);
        entry.pending_cost += cost;
        if entry.pending_cost >= INBOUND_BATCH_BYTES {
            // Large messages go at once: the consumer, perhaps on another thread, starts on
            // them while the rest of the read is handled.
            deliver(entry, shared);
        }
        Ok(())
    }

    /// Hands the messages received since the last call to their consumers: once per read of
    /// the socket, so that a busy stream's messages go over together.
    pub(crate) fn deliver(&mut self, shared: &Shared) {
        for id in self.dirty.drain(..) {
            if let Some(entry) = self.entries.get_mut(&id) {
                deliver(entry, shared);
            }
        }
        if std::mem::take(&mut self.window_grew) {
            // One pass per read, however many SETTINGS frames it held.
            for entry in self.entries.values() {
                entry.core.wake_sender();
            }
        }
    }

    /// Ends the inbound side of stream `id`: the consumer reads `end` after the messages
    /// already received.
    pub(crate) fn end_inbound(&mut self, id: u64, end: Result<Metadata, Status>, shared: &Shared) {
        if let Some(entry) = self.entries.get_mut(&id) {
            deliver(entry, shared);
            entry.core.end_recv(end);
        }
    }

    /// The peer granted credit: for stream `id`, or for the connection (id 0). Credit past
    /// 2^63 - 1 bytes at either level is a violation.
    pub(crate) fn on_window_update(
        &mut self,
        id: u64,
        increment: u64,
        shared: &Shared,
    ) -> Result<(), WireError> {
        const OVERFLOW: WireError = WireError::FlowControl { what: "credit granted past 2^63 - 1 bytes" };
        let increment = i64::try_from(increment).map_err(|_| OVERFLOW)?;
        if id == 0 {
            self.conn_send_credit = self.conn_send_credit.checked_add(increment).ok_or(OVERFLOW)?;
            if self.conn_send_credit > 0 {
                self.ready.extend(self.blocked.drain(..));
            }
            return Ok(());
        }
        if let Some(entry) = self.entries.get(&id) {
            let window = shared.peer_window.load(Ordering::Acquire);
            entry.core.add_credit(increment, window).ok_or(OVERFLOW)?;
        }
        Ok(())
    }

    /// The peer announced a stream window: it applies to every stream at once (their credit
    /// counts from it), and their senders are woken after the read. It may not shrink.
    pub(crate) fn set_peer_window(&mut self, window: u64, shared: &Shared) -> Result<(), WireError> {
        let window = i64::try_from(window)
            .map_err(|_| WireError::FlowControl { what: "INITIAL_WINDOW past 2^63 - 1 bytes" })?;
        let old = shared.peer_window.fetch_max(window, Ordering::AcqRel);
        if window < old {
            return Err(WireError::Protocol("INITIAL_WINDOW lowered"));
        }
        if window > old {
            self.window_grew = true;
        }
        Ok(())
    }

    /// Streams whose senders have data for the socket.
    pub(crate) fn schedule(&mut self, streams: impl IntoIterator<Item = Arc<StreamCore>>) {
        self.ready.extend(streams);
    }

    /// Moves buffered stream data into `out`, a stream's buffer per turn, round-robin, while
    /// `out` holds less than a chunk. Streams whose end went out are added to `ended`;
    /// `woke` is set if a sender waiting for room was woken. Returns whether anything moved.
    pub(crate) fn fill(&mut self, out: &mut BytesMut, ended: &mut Vec<u64>, woke: &mut bool) -> bool {
        let mut moved = false;
        while out.len() < STREAM_WRITE_CHUNK {
            let Some(core) = self.ready.pop_front() else { break };
            let before = out.len();
            match core.take(out, &mut self.conn_send_credit, woke) {
                Taken::Drained => {}
                Taken::Blocked => self.blocked.push(core),
                Taken::Ended => ended.push(core.id),
            }
            moved |= out.len() != before;
        }
        moved
    }

    /// Whether streams wait to be moved to the socket.
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Ends every stream with `status` (the connection is over).
    pub(crate) fn close_all(&mut self, status: &Status, shared: &Shared) {
        for (_, entry) in self.entries.drain() {
            shared.release_input(entry.pending.iter().map(StreamMessages::held_bytes).sum());
            entry.core.abort(status.clone());
        }
        for core in self.ready.drain(..).chain(self.blocked.drain(..)) {
            core.abort(status.clone());
        }
    }
}

/// Hands an entry's pending messages to its consumer; if it is gone, their credit is
/// released at connection level.
fn deliver(entry: &mut Entry, shared: &Shared) {
    entry.pending_cost = 0;
    if entry.pending.is_empty() {
        return;
    }
    if let Err(cost) = entry.core.deliver(&mut entry.pending) {
        shared.release_connection_credit(cost);
    }
}
