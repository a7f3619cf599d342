//! The way from a connection's task to a stream's consumer: the messages received on the
//! stream, then its end.
//!
//! The connection gathers the messages of one stream that arrive in one read and hands them
//! over together, so a busy stream costs one channel operation (and one wake-up of the
//! consumer) per read of the socket, not per message. A lone message goes by itself, without
//! a batch to allocate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Inbound;
use crate::metadata::Metadata;
use crate::status::Status;

/// A received message's body and the flow-control credit it used.
pub(crate) type Received = (Bytes, u64);

/// What travels through the channel.
#[derive(Debug)]
enum Item {
    One(Received),
    Batch(Vec<Received>),
    End(Result<Metadata, Status>),
}

/// A new channel to a stream's consumer.
pub(crate) fn channel() -> (InboundTx, InboundRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (InboundTx { tx, queued: Arc::clone(&queued) }, InboundRx { rx, batch: VecDeque::new(), queued })
}

/// The connection's end.
#[derive(Debug)]
pub(crate) struct InboundTx {
    tx: mpsc::UnboundedSender<Item>,
    /// Messages in the channel, batches included: what [`InboundRx::len`] counts beyond its
    /// current batch.
    queued: Arc<AtomicUsize>,
}

impl InboundTx {
    /// Sends the stream's end: the peer's trailing metadata, or the status it failed with.
    /// `false` if the consumer is gone.
    pub(crate) fn end(&self, end: Result<Metadata, Status>) -> bool {
        self.tx.send(Item::End(end)).is_ok()
    }

    /// Hands over the messages in `pending`, leaving it empty (a lone message goes by
    /// itself and `pending` keeps its allocation). If the consumer is gone, the messages are
    /// dropped and the credit they used is returned, to be given back to the peer.
    pub(crate) fn deliver(&self, pending: &mut Vec<Received>) -> Result<(), u64> {
        let count = pending.len();
        let item = match count {
            0 => return Ok(()),
            1 => match pending.pop() {
                Some(message) => Item::One(message),
                None => return Ok(()),
            },
            _ => Item::Batch(std::mem::take(pending)),
        };
        self.queued.fetch_add(count, Ordering::Relaxed);
        match self.tx.send(item) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(item)) => {
                self.queued.fetch_sub(count, Ordering::Relaxed);
                Err(match item {
                    Item::One((_, cost)) => cost,
                    Item::Batch(batch) => batch.iter().map(|(_, cost)| cost).sum(),
                    Item::End(_) => 0,
                })
            }
        }
    }
}

/// The consumer's end: messages one at a time, in order, then the end.
#[derive(Debug)]
pub(crate) struct InboundRx {
    rx: mpsc::UnboundedReceiver<Item>,
    /// The rest of the batch being read.
    batch: VecDeque<Received>,
    queued: Arc<AtomicUsize>,
}

impl InboundRx {
    /// The next message or the end; `None` once the connection dropped its end without one.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Inbound>> {
        if let Some((body, cost)) = self.batch.pop_front() {
            return Poll::Ready(Some(Inbound::Message { body, cost }));
        }
        loop {
            let Some(item) = std::task::ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            if let Some(inbound) = self.take(item) {
                return Poll::Ready(Some(inbound));
            }
        }
    }

    /// The next message or the end if one is there now; `None` otherwise.
    pub(crate) fn try_recv(&mut self) -> Option<Inbound> {
        if let Some((body, cost)) = self.batch.pop_front() {
            return Some(Inbound::Message { body, cost });
        }
        while let Ok(item) = self.rx.try_recv() {
            if let Some(inbound) = self.take(item) {
                return Some(inbound);
            }
        }
        None
    }

    /// Unpacks an item off the channel: `None` for an empty batch (never sent).
    fn take(&mut self, item: Item) -> Option<Inbound> {
        match item {
            Item::One((body, cost)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Some(Inbound::Message { body, cost })
            }
            Item::Batch(batch) => {
                self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
                self.batch = batch.into();
                let (body, cost) = self.batch.pop_front()?;
                Some(Inbound::Message { body, cost })
            }
            Item::End(end) => Some(Inbound::End(end)),
        }
    }

    /// Whether no message (and no end) is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.batch.is_empty() && self.rx.is_empty()
    }

    /// How many received messages are waiting to be read.
    pub(crate) fn len(&self) -> usize {
        self.batch.len() + self.queued.load(Ordering::Relaxed)
    }

    /// Takes no more: the connection's sends fail from now on; what is in the channel stays
    /// readable.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(n: u8) -> Received {
        (Bytes::from(vec![n; 3]), 10 + u64::from(n))
    }

    fn next(rx: &mut InboundRx) -> Option<(u8, u64)> {
        match rx.try_recv()? {
            Inbound::Message { body, cost } => Some((body[0], cost)),
            Inbound::End(_) => None,
        }
    }

    #[test]
    fn a_batch_comes_out_one_message_at_a_time_in_order_then_the_end() {
        let (tx, mut rx) = channel();
        let mut pending = vec![received(1), received(2), received(3)];
        tx.deliver(&mut pending).expect("the consumer is there");
        assert!(pending.is_empty());
        pending.push(received(4));
        tx.deliver(&mut pending).expect("the consumer is there");
        assert!(pending.is_empty() && pending.capacity() > 0, "a lone message leaves the allocation");
        assert!(tx.end(Ok(Metadata::new())));
        assert_eq!(rx.len(), 4);
        assert_eq!(next(&mut rx), Some((1, 11)));
        assert_eq!(rx.len(), 3);
        assert_eq!(
            [next(&mut rx), next(&mut rx), next(&mut rx)],
            [Some((2, 12)), Some((3, 13)), Some((4, 14))]
        );
        assert_eq!(rx.len(), 0);
        assert!(matches!(rx.try_recv(), Some(Inbound::End(Ok(_)))));
        assert!(rx.is_empty());
    }

    #[test]
    fn delivering_to_a_consumer_that_left_returns_the_credit() {
        let (tx, rx) = channel();
        drop(rx);
        let mut pending = vec![received(1), received(2)];
        assert_eq!(tx.deliver(&mut pending), Err(23));
        let mut lone = vec![received(5)];
        assert_eq!(tx.deliver(&mut lone), Err(15));
        assert!(!tx.end(Ok(Metadata::new())));
    }
}
