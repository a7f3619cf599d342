//! The connection core shared by client and server: frames in, frames out, over one socket.
//!
//! [`FrameIo`] is polled, not awaited, by a single task per connection that owns every piece
//! of that connection's state: reading never waits on writing (so two peers writing large
//! frames at each other cannot deadlock), and nothing needs a lock. Outgoing frames are
//! encoded into one buffer and written with as few syscalls as the socket allows: everything
//! queued since the last write goes out together.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{Decoder, Encoder};
use tokio_util::io::poll_read_buf;

use crate::stream::flow::FlowConfig;
use crate::wire::{Frame, FrameCodec, FrameKind, Header, PREFACE, StreamMessage, WireError};

/// What one side announces in its `SETTINGS`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocalSettings {
    pub(crate) max_frame_size: usize,
    pub(crate) max_header_size: usize,
    pub(crate) max_concurrent_calls: Option<usize>,
    pub(crate) flow: FlowConfig,
}

/// Free space guaranteed in the read buffer before each read.
const READ_RESERVE: usize = 4 * 1024;

/// How much the read buffer grows by when it runs short. Frames are slices of it that live
/// on after the read, so a grown buffer is a new allocation: growing by a large chunk makes
/// that one allocation per many small frames, instead of one per read.
const READ_CHUNK: usize = 64 * 1024;

/// An idle write buffer larger than this is released rather than kept for reuse.
const WRITE_BUF_RETAIN: usize = 1024 * 1024;

/// Frames over one byte stream: the preface, the codec, and the two buffers.
#[derive(Debug)]
pub(crate) struct FrameIo<T> {
    io: T,
    codec: FrameCodec,
    read_buf: BytesMut,
    write_buf: BytesMut,
    read_eof: bool,
    /// Bytes handed to the socket since the start.
    written: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> FrameIo<T> {
    /// Wraps `io`. Our preface is queued at once; the peer's is checked on first read.
    pub(crate) fn new(io: T, codec: FrameCodec) -> FrameIo<T> {
        let mut write_buf = BytesMut::with_capacity(READ_RESERVE);
        write_buf.extend_from_slice(&PREFACE);
        FrameIo {
            io,
            codec: codec.expect_preface(),
            read_buf: BytesMut::with_capacity(READ_RESERVE),
            write_buf,
            read_eof: false,
            written: 0,
        }
    }

    /// Wraps `io` with our limits, queuing our preface, our `SETTINGS` and the
    /// connection-level credit we grant beyond the protocol's minimum.
    pub(crate) fn open(io: T, settings: &LocalSettings) -> FrameIo<T> {
        let codec = FrameCodec::new()
            .with_max_frame_size(settings.max_frame_size)
            .with_max_header_size(settings.max_header_size);
        let mut io = FrameIo::new(io, codec);
        let mut frame = Frame::new(FrameKind::Settings, 0);
        frame.header.max_frame_size = Some(settings.max_frame_size as u64);
        frame.header.max_header_size = Some(settings.max_header_size as u64);
        frame.header.max_concurrent_calls = settings.max_concurrent_calls.map(|n| n as u64);
        frame.header.initial_window = Some(settings.flow.stream_window);
        // Settings and window updates are a few bytes: below any limit a peer could announce.
        let _ = io.queue(&frame);
        if let Some(grant) = settings.flow.initial_connection_grant() {
            let _ = io.queue(&grant);
        }
        io
    }

    /// Applies the peer's `SETTINGS` to what we send; returns the stream window it grants,
    /// if it announced one.
    pub(crate) fn apply_peer_settings(&mut self, header: &Header) -> Option<u64> {
        if let Some(max) = header.max_frame_size {
            self.codec.set_max_send_frame_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        if let Some(max) = header.max_header_size {
            self.codec.set_max_send_header_size(usize::try_from(max).unwrap_or(usize::MAX));
        }
        header.initial_window
    }

    /// Queues a frame for the next write. Fails, queuing nothing, if the frame is over the
    /// peer's limit.
    pub(crate) fn queue(&mut self, frame: &Frame) -> Result<(), WireError> {
        self.codec.encode(frame, &mut self.write_buf)
    }

    /// Queues a `STREAM_MESSAGE` of stream `id` carrying `body`; fails, queuing nothing, if
    /// it is over the peer's limit.
    pub(crate) fn queue_message(&mut self, id: u64, body: &[u8]) -> Result<(), WireError> {
        self.codec.encode_message(id, body, &mut self.write_buf)
    }

    /// Whether the peer's preface has been received.
    pub(crate) fn peer_preface_received(&self) -> bool {
        !self.codec.is_awaiting_preface()
    }

    /// Whether queued bytes are still to be written.
    pub(crate) fn has_pending_writes(&self) -> bool {
        !self.write_buf.is_empty()
    }

    /// How many queued bytes are still to be written.
    pub(crate) fn pending_write_bytes(&self) -> usize {
        self.write_buf.len()
    }

    /// Bytes handed to the socket since the start.
    pub(crate) fn written_total(&self) -> u64 {
        self.written
    }

    /// Bytes queued since the start: once `written_total` reaches a value this returned,
    /// everything queued before that moment has been written.
    pub(crate) fn queued_total(&self) -> u64 {
        self.written + self.write_buf.len() as u64
    }

    /// The next frame if it is a plain `STREAM_MESSAGE` already in the read buffer (see
    /// [`FrameCodec::take_message`]); `None` otherwise, leaving it to
    /// [`poll_read_frame`](Self::poll_read_frame). No I/O.
    pub(crate) fn take_message(&mut self) -> Option<StreamMessage> {
        self.codec.take_message(&mut self.read_buf)
    }

    /// The next frame. `Ok(None)` is a clean end of stream between frames.
    pub(crate) fn poll_read_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Frame>, WireError>> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.read_buf)? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.read_eof {
                return Poll::Ready(self.codec.decode_eof(&mut self.read_buf));
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_RESERVE {
                self.read_buf.reserve(READ_CHUNK);
            }
            let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf))?;
            if n == 0 {
                self.read_eof = true;
            }
        }
    }

    /// Writes everything queued. `Ready(Ok)` means the buffer is empty.
    pub(crate) fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write_buf.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.write_buf))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.write_buf.advance(n);
            self.written += n as u64;
        }
        if self.write_buf.capacity() > WRITE_BUF_RETAIN {
            self.write_buf = BytesMut::with_capacity(READ_RESERVE);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Writes what is queued, then closes our write side.
    pub(crate) async fn close(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(cx)).await?;
        std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await
    }
}

/// Read buffer capacity, for tests of the no-allocation-before-limit rule.
#[cfg(test)]
impl<T> FrameIo<T> {
    pub(crate) fn read_capacity(&self) -> usize {
        self.read_buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::wire::{FrameKind, varint};

    #[tokio::test]
    async fn frames_cross_a_duplex_pipe_after_both_prefaces() {
        let (a, b) = tokio::io::duplex(64);
        let mut left = FrameIo::new(a, FrameCodec::new());
        let mut right = FrameIo::new(b, FrameCodec::new());
        for id in 1..=50 {
            left.queue(&Frame::new(FrameKind::Cancel, id)).expect("queued");
        }
        // The pipe holds 64 bytes: writing and reading must interleave.
        let writer = async {
            std::future::poll_fn(|cx| left.poll_write(cx)).await.expect("written");
            left
        };
        let reader = async {
            let mut ids = Vec::new();
            while ids.len() < 50 {
                let frame = std::future::poll_fn(|cx| right.poll_read_frame(cx)).await.expect("ok");
                ids.push(frame.expect("frame").call_id);
            }
            ids
        };
        let (_, ids) = tokio::join!(writer, reader);
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    }

    /// A sink that accepts everything and counts the writes and flushes it was given.
    #[derive(Default)]
    struct CountingSink {
        writes: usize,
        flushes: usize,
        bytes: usize,
    }

    impl AsyncRead for CountingSink {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for CountingSink {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.bytes += buf.len();
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_queued_together_go_out_in_one_write_and_one_flush() {
        let mut io = FrameIo::new(CountingSink::default(), FrameCodec::new());
        let mut expected = PREFACE.len();
        for id in 1..=100 {
            let frame = Frame::new(FrameKind::Cancel, id);
            expected += frame.encoded_len();
            io.queue(&frame).expect("queued");
        }
        std::future::poll_fn(|cx| io.poll_write(cx)).await.expect("written");
        assert_eq!((io.io.writes, io.io.flushes, io.io.bytes), (1, 1, expected));
    }

    #[tokio::test]
    async fn oversized_length_prefix_does_not_grow_the_read_buffer() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut io = FrameIo::new(b, FrameCodec::new().with_max_frame_size(1024));
        let mut wire = PREFACE.to_vec();
        varint::encode(u32::MAX as u64, &mut wire);
        a.write_all(&wire).await.expect("write");
        let err = std::future::poll_fn(|cx| io.poll_read_frame(cx)).await.expect_err("too large");
        assert!(matches!(err, WireError::FrameTooLarge { .. }));
        assert!(io.read_capacity() < 64 * 1024, "capacity {}", io.read_capacity());
    }
}
