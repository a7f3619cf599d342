//! Per-connection stream bookkeeping, owned by the connection's task: flow-control credit in
//! both directions, and the fair scheduling of outgoing stream messages.
//!
//! Credit is counted in frame payload bytes of `STREAM_MESSAGE` frames, per stream and for
//! the whole connection (see `docs/PROTOCOL.md`, "Flow control").
//!
//! Sending: each stream's messages wait in its outbox until the peer's credit allows them;
//! `fill` moves them into the write buffer round-robin across streams and only while the
//! buffer holds less than [`STREAM_WRITE_CHUNK`], so unary and control frames, which go to
//! the buffer directly, never wait behind more than a chunk of bulk data.
//!
//! Receiving: incoming messages are counted against the credit we granted; a peer that
//! overruns it is a protocol violation. Credit is granted back as the application consumes
//! messages, reported through [`StreamEvent::Release`](super::StreamEvent).

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use bytes::Bytes;

use super::inbound::{InboundTx, Received};
use super::{StreamEvent, StreamShared};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::transport::FrameIo;
use crate::wire::{
    CallMap, Frame, FrameKind, MIN_CONNECTION_WINDOW, MIN_STREAM_WINDOW, StreamMessage, WireError,
};

/// Stream data is moved into the write buffer only while it holds less than this, keeping
/// frames queued behind it (unary responses, pings) within a chunk of the front.
pub(crate) const STREAM_WRITE_CHUNK: usize = 64 * 1024;

/// Received messages of a stream are handed to its consumer at the end of each read, or as
/// soon as this many bytes of them have come.
const INBOUND_BATCH_BYTES: u64 = 32 * 1024;

/// Fill-and-write rounds per poll while the socket keeps taking stream data.
const WRITE_ROUNDS: usize = 16;

/// The windows this side grants, and the largest frame it accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlowConfig {
    /// Credit granted to the peer for each stream (announced as `INITIAL_WINDOW`).
    pub(crate) stream_window: u64,
    /// Credit granted to the peer for the whole connection.
    pub(crate) connection_window: u64,
    /// Our maximum frame payload: the overdraft a sender is allowed (one message).
    pub(crate) max_frame_size: usize,
}

impl FlowConfig {
    /// The connection-level `WINDOW_UPDATE` that raises the peer's credit from the protocol
    /// minimum to our window; `None` if we grant just the minimum.
    pub(crate) fn initial_connection_grant(&self) -> Option<Frame> {
        let extra = self.connection_window.saturating_sub(MIN_CONNECTION_WINDOW);
        (extra > 0).then(|| window_update(0, extra))
    }
}

fn window_update(id: u64, increment: u64) -> Frame {
    let mut frame = Frame::new(FrameKind::WindowUpdate, id);
    frame.header.window_increment = Some(increment);
    frame
}

/// One stream's state on this connection.
///
/// A slot lives until the call is over (`finished`) *and* its consumer has detached: the
/// consumer may still be reading messages after the end arrived, and the credit it releases
/// must still be granted back on this connection.
struct Slot {
    /// Where received messages go; `None` once the peer half-closed or the consumer left.
    inbound: Option<InboundTx>,
    /// Messages received in the current read, handed to the consumer together at its end
    /// (or once they reach [`INBOUND_BATCH_BYTES`]).
    pending: Vec<Received>,
    /// The credit the pending messages used: their size.
    pending_cost: u64,
    /// Credit we granted minus bytes received.
    recv_remaining: i64,
    /// Bytes the consumer has released that we have not granted back yet.
    unreleased: u64,
    /// Credit the peer granted us minus bytes sent.
    send_credit: i64,
    /// Messages (and finally the `STREAM_END`) waiting to be written, in order.
    outbox: VecDeque<Outbound>,
    /// Shared with the local `StreamSender`: its budget and outcome.
    shared: Arc<StreamShared>,
    /// Whether the id is in the scheduling ring.
    in_ring: bool,
    /// The call is over for this side.
    finished: bool,
    /// The consumer is gone (it read the end, or was dropped).
    detached: bool,
    /// Budget of messages moved to the write buffer in the current `fill`, given back to
    /// the local sender at its end: one semaphore operation per stream and fill, not per
    /// message.
    budget_owed: usize,
}

impl Slot {
    /// Hands the pending messages to the consumer. If it is gone, they are consumed now:
    /// returns the connection-level credit to give back for them (the stream's own is given
    /// back here).
    fn deliver(&mut self) -> u64 {
        self.pending_cost = 0;
        let Some(inbound) = &self.inbound else {
            return self.pending.drain(..).map(|(_, cost)| cost).sum();
        };
        match inbound.deliver(&mut self.pending) {
            Ok(()) => 0,
            Err(cost) => {
                self.inbound = None;
                self.recv_remaining += cost as i64;
                cost
            }
        }
    }
}

/// A frame waiting in a stream's outbox.
enum Outbound {
    /// A message's body.
    Message(Bytes),
    /// The stream's end.
    End(Box<Frame>),
}

/// A stream whose outgoing frame could not be sent, for the connection to act on.
#[derive(Debug)]
pub(crate) struct Failed {
    pub(crate) id: u64,
    pub(crate) status: Status,
}

/// The streams of one connection.
pub(crate) struct StreamTable {
    slots: CallMap<Slot>,
    ring: VecDeque<u64>,
    config: FlowConfig,
    /// The peer's `INITIAL_WINDOW`: our starting credit for each stream.
    peer_stream_window: i64,
    /// Connection-level credit the peer granted us minus bytes sent.
    conn_send_credit: i64,
    /// Connection-level credit we granted minus bytes received.
    conn_recv_remaining: i64,
    /// Connection-level bytes released and not yet granted back.
    conn_unreleased: u64,
    /// Streams whose frames could not be sent, for the connection to clean up.
    failed: Vec<Failed>,
    /// Streams owed budget in the current `fill` (kept to reuse its allocation).
    owed: Vec<u64>,
    /// Streams with messages pending for their consumer.
    dirty: Vec<u64>,
}

impl StreamTable {
    pub(crate) fn new(config: FlowConfig) -> StreamTable {
        StreamTable {
            slots: CallMap::default(),
            ring: VecDeque::new(),
            config,
            peer_stream_window: MIN_STREAM_WINDOW as i64,
            conn_send_credit: MIN_CONNECTION_WINDOW as i64,
            conn_recv_remaining: config.connection_window as i64,
            conn_unreleased: 0,
            failed: Vec::new(),
            owed: Vec::new(),
            dirty: Vec::new(),
        }
    }

    /// Whether stream `id` has a slot here.
    pub(crate) fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// Whether any stream is open and not over.
    pub(crate) fn has_live(&self) -> bool {
        self.slots.values().any(|slot| !slot.finished)
    }

    /// Whether stream `id` is open and not over.
    pub(crate) fn is_live(&self, id: u64) -> bool {
        self.slots.get(&id).is_some_and(|slot| !slot.finished)
    }

    /// Registers a stream. `inbound` receives the peer's messages; `shared` is the local
    /// sender's budget.
    pub(crate) fn open(&mut self, id: u64, inbound: InboundTx, shared: Arc<StreamShared>) {
        let slot = Slot {
            inbound: Some(inbound),
            pending: Vec::new(),
            pending_cost: 0,
            recv_remaining: self.config.stream_window as i64,
            unreleased: 0,
            send_credit: self.peer_stream_window,
            outbox: VecDeque::new(),
            shared,
            in_ring: false,
            finished: false,
            detached: false,
            budget_owed: 0,
        };
        self.slots.insert(id, slot);
    }

    /// Applies the peer's `INITIAL_WINDOW` to new streams and, by the difference, to open ones.
    pub(crate) fn set_peer_stream_window(&mut self, window: u64) {
        let window = window.clamp(MIN_STREAM_WINDOW, i64::MAX as u64) as i64;
        let delta = window - self.peer_stream_window;
        self.peer_stream_window = window;
        for (id, slot) in &mut self.slots {
            slot.send_credit = slot.send_credit.saturating_add(delta);
            if !slot.outbox.is_empty() && !slot.in_ring {
                slot.in_ring = true;
                self.ring.push_back(*id);
            }
        }
    }

    /// A `STREAM_MESSAGE` arrived: checks it against the credit granted and keeps it for the
    /// stream's consumer, who gets it at the next [`deliver`](Self::deliver). A message
    /// nobody will read has its credit released at once.
    pub(crate) fn on_message<T>(
        &mut self,
        message: StreamMessage,
        io: &mut FrameIo<T>,
    ) -> Result<(), WireError>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let StreamMessage { call_id, body, cost } = message;
        let overdraft = self.config.max_frame_size as i64;
        self.conn_recv_remaining -= cost as i64;
        if self.conn_recv_remaining < -overdraft {
            return Err(WireError::FlowControl { what: "connection window overrun" });
        }
        let Some(slot) = self.slots.get_mut(&call_id) else {
            // Nobody will read it: consumed now.
            self.conn_unreleased += cost;
            self.grant_connection_credit(io);
            return Ok(());
        };
        slot.recv_remaining -= cost as i64;
        if slot.recv_remaining < -overdraft {
            return Err(WireError::FlowControl { what: "stream window overrun" });
        }
        if slot.inbound.is_some() {
            if slot.pending.is_empty() {
                self.dirty.push(call_id);
            }
            slot.pending.push((body, cost));
            slot.pending_cost += cost;
            if slot.pending_cost >= INBOUND_BATCH_BYTES {
                // Large messages go at once: the consumer, perhaps on another thread, starts
                // on them while the rest of the read is handled.
                let undelivered = slot.deliver();
                if undelivered > 0 {
                    self.conn_unreleased += undelivered;
                    self.grant_connection_credit(io);
                }
            }
        } else {
            slot.recv_remaining += cost as i64;
            self.conn_unreleased += cost;
            self.grant_connection_credit(io);
        }
        Ok(())
    }

    /// Hands the messages received since the last call to their streams' consumers: once per
    /// read of the socket, so that a busy stream's messages go over together.
    pub(crate) fn deliver<T>(&mut self, io: &mut FrameIo<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        let mut undelivered = 0;
        for id in dirty.drain(..) {
            if let Some(slot) = self.slots.get_mut(&id) {
                undelivered += slot.deliver();
            }
        }
        self.dirty = dirty;
        if undelivered > 0 {
            self.conn_unreleased += undelivered;
            self.grant_connection_credit(io);
        }
    }

    /// Ends the inbound side of stream `id`: the consumer reads `end` after the messages
    /// already received.
    pub(crate) fn end_inbound(&mut self, id: u64, end: Result<Metadata, Status>) {
        if let Some(slot) = self.slots.get_mut(&id) {
            self.conn_unreleased += slot.deliver();
            if let Some(inbound) = slot.inbound.take() {
                inbound.end(end);
            }
        }
    }

    /// The consumer of stream `id` has taken `bytes` of messages (`last`: and is done with
    /// the stream). Grants credit back, in `WINDOW_UPDATE`s queued on `io` once half a window
    /// has accumulated.
    pub(crate) fn release<T>(&mut self, id: u64, bytes: u64, last: bool, io: &mut FrameIo<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.unreleased += bytes;
            if slot.unreleased >= self.config.stream_window / 2 && !slot.finished && !last {
                let grant = std::mem::take(&mut slot.unreleased);
                slot.recv_remaining += grant as i64;
                // Window updates are a few bytes: below any limit.
                let _ = io.queue(&window_update(id, grant));
            }
            if last {
                slot.detached = true;
                slot.inbound = None;
                // Received for a consumer that is gone: consumed now.
                let unread: u64 = slot.pending.drain(..).map(|(_, cost)| cost).sum();
                self.conn_unreleased += unread;
                self.remove_if_done(id);
            }
        }
        self.conn_unreleased += bytes;
        self.grant_connection_credit(io);
    }

    /// Grants consumed bytes back at connection level once half the window has built up, or
    /// as soon as any has when the peer's credit is down to half the window: idle streams
    /// holding part of the window must not leave an active one waiting for a threshold the
    /// rest can no longer reach.
    fn grant_connection_credit<T>(&mut self, io: &mut FrameIo<T>)
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let half = (self.config.connection_window / 2) as i64;
        let due = self.conn_unreleased as i64 >= half
            || (self.conn_unreleased > 0 && self.conn_recv_remaining <= half);
        if due {
            let grant = std::mem::take(&mut self.conn_unreleased);
            self.conn_recv_remaining += grant as i64;
            // Window updates are a few bytes: below any limit.
            let _ = io.queue(&window_update(0, grant));
        }
    }

    /// The peer granted credit: for stream `id`, or for the connection (id 0).
    pub(crate) fn on_window_update(&mut self, id: u64, increment: u64) {
        let increment = increment.min(i64::MAX as u64) as i64;
        if id == 0 {
            self.conn_send_credit = self.conn_send_credit.saturating_add(increment);
            return;
        }
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.send_credit = slot.send_credit.saturating_add(increment);
            if !slot.outbox.is_empty() && !slot.in_ring {
                slot.in_ring = true;
                self.ring.push_back(id);
            }
        }
    }

    /// Queues an outgoing message or end of a stream behind what is already waiting.
    /// Frames of streams that are over are dropped.
    pub(crate) fn push(&mut self, event: StreamEvent) {
        let (id, outbound) = match event {
            StreamEvent::Message { id, body } => (id, Outbound::Message(body)),
            StreamEvent::End(frame) => (frame.call_id, Outbound::End(frame)),
            StreamEvent::Release { .. } | StreamEvent::Cancel { .. } => return,
        };
        if let Some(slot) = self.slots.get_mut(&id)
            && !slot.finished
            && !slot.shared.budget.is_closed()
        {
            if let Outbound::End(frame) = &outbound {
                // Nothing may follow the end: further sends fail.
                slot.shared.stop_sending(Status::failed_precondition("the stream was closed by this side"));
                if frame.header.status_code == Some(Code::DeadlineExceeded.as_u32()) {
                    // Past the deadline the call is over whatever is queued: the end goes now,
                    // not behind messages waiting for credit.
                    slot.outbox.clear();
                }
            }
            slot.outbox.push_back(outbound);
            if !slot.in_ring {
                slot.in_ring = true;
                self.ring.push_back(id);
            }
        }
    }

    /// Moves waiting stream frames into `io`'s write buffer, one message per stream in turn,
    /// as far as credit allows and while the buffer holds less than a chunk. Returns whether
    /// anything moved. Streams whose `STREAM_END` went out are added to `ended`.
    pub(crate) fn fill<T>(&mut self, io: &mut FrameIo<T>, ended: &mut Vec<u64>) -> bool
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let mut moved = false;
        let mut idle_turns = 0;
        while io.pending_write_bytes() < STREAM_WRITE_CHUNK && idle_turns < self.ring.len() {
            let Some(id) = self.ring.pop_front() else { break };
            let Some(slot) = self.slots.get_mut(&id) else { continue };
            let Some(front) = slot.outbox.front() else {
                slot.in_ring = false;
                continue;
            };
            let is_message = matches!(front, Outbound::Message(_));
            if is_message && (slot.send_credit <= 0 || self.conn_send_credit <= 0) {
                // Waiting for credit: it keeps its place in the turn order.
                self.ring.push_back(id);
                idle_turns += 1;
                continue;
            }
            idle_turns = 0;
            let Some(outbound) = slot.outbox.pop_front() else { continue };
            let queued = match &outbound {
                Outbound::Message(body) => io.queue_message(id, body),
                Outbound::End(frame) => io.queue(frame),
            };
            if let Err(err) = queued {
                // Only a message over the peer's frame limit can fail to queue.
                let status = Status::resource_exhausted(format!("stream message not sent: {err}"));
                self.close(id, status.clone());
                self.failed.push(Failed { id, status });
                continue;
            }
            moved = true;
            if let Outbound::Message(body) = &outbound {
                let cost = Frame::message_payload_len(id, body.len());
                slot.send_credit -= cost as i64;
                self.conn_send_credit -= cost as i64;
                if slot.budget_owed == 0 {
                    self.owed.push(id);
                }
                slot.budget_owed += cost.min(slot.shared.cap as usize);
            } else {
                ended.push(id);
            }
            if slot.outbox.is_empty() {
                slot.in_ring = false;
            } else {
                self.ring.push_back(id);
            }
        }
        for id in self.owed.drain(..) {
            if let Some(slot) = self.slots.get_mut(&id) {
                slot.shared.budget.add_permits(std::mem::take(&mut slot.budget_owed));
            }
        }
        moved
    }

    /// Writes what `io` has queued, topping it up with stream data a chunk at a time for as
    /// long as the socket takes it (then yields, to be polled again). Streams whose end went
    /// out are added to `ended`. `Ready(Ok)`: everything written; `Pending`: the socket is
    /// full and will wake us.
    pub(crate) fn poll_write<T>(
        &mut self,
        io: &mut FrameIo<T>,
        cx: &mut std::task::Context<'_>,
        ended: &mut Vec<u64>,
    ) -> std::task::Poll<std::io::Result<()>>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        for _ in 0..WRITE_ROUNDS {
            let moved = self.fill(io, ended);
            match io.poll_write(cx) {
                // Written out: more stream data may fit now that the buffer is empty (it may
                // have held a chunk of other frames), and nothing else would come back for it.
                std::task::Poll::Ready(Ok(())) if moved || self.fill(io, ended) => continue,
                other => return other,
            }
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Ready(Ok(()))
    }

    /// Streams whose frames could not be sent since the last call.
    pub(crate) fn take_failed(&mut self) -> Vec<Failed> {
        std::mem::take(&mut self.failed)
    }

    /// The call on stream `id` is over for this side: nothing more is sent, waiting frames
    /// are dropped, and the local sender's next send fails with `status`. The consumer keeps
    /// what it was delivered; the slot goes once it has detached.
    pub(crate) fn finish(&mut self, id: u64, status: Status) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.finished = true;
            slot.outbox.clear();
            slot.shared.close(status);
            self.remove_if_done(id);
        }
    }

    /// Records that the call on stream `id` ended with `result` (the server's end).
    pub(crate) fn complete(&mut self, id: u64, result: Result<(), Status>) {
        if let Some(slot) = self.slots.get(&id) {
            slot.shared.complete(result);
        }
    }

    /// Ends stream `id` with `status` on both sides: the consumer reads `status` as the end
    /// (unless it already had one), and the call is [finished](Self::finish).
    pub(crate) fn close(&mut self, id: u64, status: Status) {
        self.end_inbound(id, Err(status.clone()));
        self.finish(id, status);
    }

    fn remove_if_done(&mut self, id: u64) {
        if self.slots.get(&id).is_some_and(|slot| slot.finished && slot.detached) {
            self.slots.remove(&id);
        }
    }

    /// Closes every stream with `status` (the connection is going away).
    pub(crate) fn close_all(&mut self, status: &Status) {
        for (_, mut slot) in self.slots.drain() {
            slot.deliver();
            if let Some(inbound) = slot.inbound {
                inbound.end(Err(status.clone()));
            }
            slot.shared.close(status.clone());
        }
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;

    use super::*;
    use crate::wire::FrameCodec;

    fn config() -> FlowConfig {
        FlowConfig { stream_window: 64 * 1024, connection_window: 1024 * 1024, max_frame_size: 64 * 1024 }
    }

    fn message(id: u64, len: usize) -> StreamEvent {
        StreamEvent::Message { id, body: Bytes::from(vec![0u8; len]) }
    }

    /// The peer's end of the pipe, decoding what the table wrote.
    struct Peer {
        pipe: tokio::io::DuplexStream,
        codec: FrameCodec,
        buf: BytesMut,
    }

    /// A table with streams 1 and 2 open, and an io whose written frames the peer reads back.
    fn setup() -> (StreamTable, FrameIo<tokio::io::DuplexStream>, Peer) {
        let (ours, theirs) = tokio::io::duplex(16 * 1024 * 1024);
        let io = FrameIo::new(ours, FrameCodec::new());
        let mut table = StreamTable::new(config());
        for id in [1, 2] {
            let (tx, _rx) = crate::stream::inbound::channel();
            table.open(id, tx, StreamShared::new(1 << 20));
        }
        let peer = Peer { pipe: theirs, codec: FrameCodec::new().expect_preface(), buf: BytesMut::new() };
        (table, io, peer)
    }

    /// Writes what is queued; the call ids of the frames the peer receives.
    async fn written_ids(io: &mut FrameIo<tokio::io::DuplexStream>, peer: &mut Peer) -> Vec<u64> {
        std::future::poll_fn(|cx| io.poll_write(cx)).await.expect("write");
        let mut chunk = vec![0u8; 16 * 1024 * 1024];
        let n = peer.pipe.read(&mut chunk).await.expect("read");
        peer.buf.extend_from_slice(&chunk[..n]);
        let mut ids = Vec::new();
        while let Some(frame) = peer.codec.decode(&mut peer.buf).expect("frames") {
            ids.push(frame.call_id);
        }
        ids
    }

    #[tokio::test]
    async fn streams_take_turns_one_message_each() {
        let (mut table, mut io, mut peer) = setup();
        for _ in 0..3 {
            table.push(message(1, 10));
        }
        for _ in 0..3 {
            table.push(message(2, 10));
        }
        assert!(table.fill(&mut io, &mut Vec::new()));
        assert_eq!(written_ids(&mut io, &mut peer).await, [1, 2, 1, 2, 1, 2]);
    }

    #[tokio::test]
    async fn stream_data_stops_at_a_chunk_so_other_frames_are_not_buried() {
        let (mut table, mut io, mut peer) = setup();
        for _ in 0..10 {
            table.push(message(1, 16 * 1024));
        }
        table.fill(&mut io, &mut Vec::new());
        // About a chunk went into the buffer, not the whole 160 KiB.
        let ids = written_ids(&mut io, &mut peer).await;
        assert!(ids.len() <= STREAM_WRITE_CHUNK / (16 * 1024) + 1, "{} messages in one go", ids.len());
    }

    #[tokio::test]
    async fn a_stream_without_credit_waits_and_goes_when_credit_arrives() {
        let (mut table, mut io, mut peer) = setup();
        // The default 64 KiB of credit: two 40 KiB messages go (the second overdraws), the
        // third waits.
        for _ in 0..3 {
            table.push(message(1, 40 * 1024));
        }
        table.fill(&mut io, &mut Vec::new());
        assert_eq!(written_ids(&mut io, &mut peer).await, [1, 1]);
        assert!(!table.fill(&mut io, &mut Vec::new()), "no credit left");
        table.on_window_update(1, 100 * 1024);
        table.fill(&mut io, &mut Vec::new());
        assert_eq!(written_ids(&mut io, &mut peer).await, [1]);
    }

    #[tokio::test]
    async fn receiving_past_the_window_plus_one_frame_is_a_violation() {
        let (ours, _theirs) = tokio::io::duplex(1024 * 1024);
        let mut io = FrameIo::new(ours, FrameCodec::new());
        let mut table = StreamTable::new(config());
        let (tx, _rx) = crate::stream::inbound::channel();
        table.open(1, tx, StreamShared::new(1 << 20));
        let mut frame = Frame::new(FrameKind::StreamMessage, 1);
        frame.body = Bytes::from(vec![0u8; 1000]);
        let cost = frame.payload_len() as i64;
        assert_eq!(frame.payload_len(), Frame::message_payload_len(1, 1000));
        let allowed = (64 * 1024 + 64 * 1024) / cost;
        for _ in 0..allowed {
            table.on_message(frame.clone().into(), &mut io).expect("within the window and the overdraft");
        }
        assert!(matches!(table.on_message(frame.into(), &mut io), Err(WireError::FlowControl { .. })));
    }

    #[test]
    fn consumption_is_granted_back_at_half_a_window() {
        let (ours, _theirs) = tokio::io::duplex(1024);
        let mut io = FrameIo::new(ours, FrameCodec::new());
        let mut table = StreamTable::new(config());
        let (tx, _rx) = crate::stream::inbound::channel();
        table.open(1, tx, StreamShared::new(1 << 20));
        let before = io.pending_write_bytes();
        table.release(1, 10 * 1024, false, &mut io);
        assert_eq!(io.pending_write_bytes(), before, "under half a window: nothing yet");
        table.release(1, 30 * 1024, false, &mut io);
        assert!(io.pending_write_bytes() > before, "half a window released: a WINDOW_UPDATE");
    }

    #[tokio::test]
    async fn stream_data_behind_a_chunk_of_other_frames_is_written_in_the_same_poll() {
        use std::task::{Poll, Wake, Waker};

        struct NoWake;
        impl Wake for NoWake {
            fn wake(self: Arc<Self>) {}
        }

        let (ours, _theirs) = tokio::io::duplex(16 * 1024 * 1024);
        let mut io = FrameIo::new(ours, FrameCodec::new());
        let mut table = StreamTable::new(config());
        let (tx, _rx) = crate::stream::inbound::channel();
        table.open(1, tx, StreamShared::new(1 << 20));
        // A 70 KiB response fills the buffer past a chunk; a stream message waits behind it.
        let mut big = Frame::new(FrameKind::Response, 9);
        big.body = Bytes::from(vec![0u8; 70 * 1024]);
        io.queue(&big).expect("queued");
        table.push(message(1, 5));
        let waker = Waker::from(Arc::new(NoWake));
        let mut cx = std::task::Context::from_waker(&waker);
        let result = table.poll_write(&mut io, &mut cx, &mut Vec::new());
        assert!(matches!(result, Poll::Ready(Ok(()))));
        assert!(table.slots[&1].outbox.is_empty(), "the message was left behind with nothing to wake for it");
        assert_eq!(io.pending_write_bytes(), 0);
    }
}
