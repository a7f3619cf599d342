//! [`FrameIo`]: frames over one byte stream. The read side turns bytes into frames through
//! the one decoder; the write side holds the bytes on their way to the socket and counts them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::wire::{FrameCodec, Incoming, PREFACE, WireError};

/// The read buffer's first size, and the least it grows by.
const READ_RESERVE: usize = 4 * 1024;

/// Free space below which a busy connection's read buffer always grows before a read. It
/// grows sooner, with a quarter of its read step left: reading the last few KiB of a buffer
/// would take a system call per few KiB (and per few hundred small stream messages) while the
/// socket holds far more. A read that fills at least this much room counts as a full one
/// (the read step doubles).
const READ_MIN_SPARE: usize = 1024;

/// The most the read buffer grows by at a time. Frames are slices of it that live on after
/// the read, so a grown buffer is a new allocation: growing by a large chunk makes that one
/// allocation per many small frames, instead of one per read. The step adapts: it doubles
/// while reads fill all the room there was, up to this, and halves while they take little,
/// so an idle or lightly used connection holds a few KiB, and a busy one reads in large
/// gulps.
const READ_CHUNK: usize = 64 * 1024;

/// Plain stream messages of one stream that follow each other in the read buffer are taken
/// off it together, up to this many bytes: one slice for the stream's consumer, not one per
/// message.
const MESSAGE_RUN: usize = 32 * 1024;

/// A read buffer with more room than this was grown for a large frame, and counts in the
/// connection's input. Once a large frame is taken, what follows it goes to a new buffer of
/// the usual size, so that small frames (whose metadata or bodies calls may keep) do not keep
/// the large allocation alive.
const LARGE_READ_BUFFER: usize = 2 * READ_CHUNK;

/// An idle write buffer larger than this is released rather than kept for reuse.
const WRITE_BUF_RETAIN: usize = 1024 * 1024;

/// Frames over one byte stream: the codec and the two buffers.
#[derive(Debug)]
pub(crate) struct FrameIo<T> {
    io: T,
    codec: FrameCodec,
    read_buf: BytesMut,
    /// Bytes on their way to the socket.
    pub(crate) write_buf: BytesMut,
    read_eof: bool,
    /// How much the read buffer grows by next (see [`READ_CHUNK`]).
    read_step: usize,
    /// Bytes handed to the socket since the start.
    written: u64,
}

impl<T: AsyncRead + AsyncWrite + Unpin> FrameIo<T> {
    /// Wraps `io`, with our preface queued; the peer's is checked on the first read.
    pub(crate) fn new(io: T, codec: FrameCodec) -> FrameIo<T> {
        let mut write_buf = BytesMut::with_capacity(READ_RESERVE);
        write_buf.extend_from_slice(&PREFACE);
        FrameIo {
            io,
            codec: codec.expect_preface(),
            read_buf: BytesMut::with_capacity(READ_RESERVE),
            write_buf,
            read_eof: false,
            read_step: READ_RESERVE,
            written: 0,
        }
    }

    /// Whether the peer's preface has been received.
    pub(crate) fn peer_preface_received(&self) -> bool {
        !self.codec.is_awaiting_preface()
    }

    /// The read buffer's room beyond the usual: what a large frame being read takes, counted
    /// in the connection's input.
    pub(crate) fn large_read_buffer(&self) -> usize {
        self.read_buf.capacity().saturating_sub(LARGE_READ_BUFFER)
    }

    /// Whether part of a frame (or of the peer's preface) has been read and waits for the
    /// rest.
    pub(crate) fn has_partial_frame(&self) -> bool {
        !self.read_buf.is_empty()
    }

    /// Bytes handed to the socket since the start.
    pub(crate) fn written_total(&self) -> u64 {
        self.written
    }

    /// Bytes queued in the write buffer since the start: once `written_total` reaches a value
    /// this returned, everything queued before that moment has been written.
    pub(crate) fn queued_total(&self) -> u64 {
        self.written + self.write_buf.len() as u64
    }

    /// The next frame, reading the socket as needed. `Ok(None)` is a clean end of stream
    /// between frames.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Incoming>, WireError>> {
        loop {
            let before = self.read_buf.len();
            if let Some(incoming) = self.codec.decode_incoming(&mut self.read_buf, MESSAGE_RUN)? {
                if before - self.read_buf.len() > READ_CHUNK {
                    // A large frame was taken: the rest goes to a buffer of its own.
                    let mut fresh =
                        BytesMut::with_capacity(self.read_step.max(self.read_buf.len() + READ_RESERVE));
                    fresh.extend_from_slice(&self.read_buf);
                    self.read_buf = fresh;
                }
                return Poll::Ready(Ok(Some(incoming)));
            }
            if self.read_eof {
                return Poll::Ready(self.codec.decode_incoming_eof(&mut self.read_buf));
            }
            if self.read_buf.capacity() - self.read_buf.len() < self.least_spare() {
                self.read_buf.reserve(self.read_step);
            }
            let room = self.read_buf.capacity() - self.read_buf.len();
            let n = ready!(poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read_buf))?;
            if n == 0 {
                self.read_eof = true;
            } else if n == room {
                // The socket held at least as much as there was room for: read in larger gulps
                // (unless the room was the small rest of a buffer, which says little).
                if room >= READ_MIN_SPARE {
                    self.read_step = (self.read_step * 2).min(READ_CHUNK);
                }
            } else if n < self.read_step / 8 {
                self.read_step = (self.read_step / 2).max(READ_RESERVE);
            }
        }
    }

    /// The free space below which the read buffer grows before a read. A busy connection's
    /// grows with a quarter of its step left (see [`READ_MIN_SPARE`]). A lightly used one reads
    /// into what is left, however little, and grows only once it is full: growing right after
    /// a frame was taken, while that frame is still alive, would always be a new allocation;
    /// by the time the buffer is full its frames are usually gone, and the buffer is reused in
    /// place.
    fn least_spare(&self) -> usize {
        if self.read_step > READ_RESERVE { (self.read_step / 4).max(READ_MIN_SPARE) } else { 1 }
    }

    /// Writes everything in the write buffer. `Ready(Ok)` means it is empty.
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

    /// The read buffer's capacity, for tests of the no-allocation-before-limit rule.
    #[cfg(test)]
    pub(crate) fn read_capacity(&self) -> usize {
        self.read_buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::wire::{Frame, FrameKind, varint};

    fn queue(io: &mut FrameIo<impl AsyncRead + AsyncWrite + Unpin>, frame: &Frame) {
        frame.encode_unchecked(&mut io.write_buf);
    }

    #[tokio::test]
    async fn frames_cross_a_duplex_pipe_after_both_prefaces() {
        let (a, b) = tokio::io::duplex(64);
        let mut left = FrameIo::new(a, FrameCodec::new());
        let mut right = FrameIo::new(b, FrameCodec::new());
        for id in 1..=50 {
            queue(&mut left, &Frame::new(FrameKind::Cancel, id));
        }
        // The pipe holds 64 bytes: writing and reading must interleave.
        let writer = async {
            std::future::poll_fn(|cx| left.poll_write(cx)).await.expect("written");
            left
        };
        let reader = async {
            let mut ids = Vec::new();
            while ids.len() < 50 {
                match std::future::poll_fn(|cx| right.poll_next(cx)).await.expect("ok") {
                    Some(Incoming::Frame(frame)) => ids.push(frame.call_id),
                    other => panic!("unexpected {other:?}"),
                }
            }
            ids
        };
        let (_, ids) = tokio::join!(writer, reader);
        assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn frames_after_a_large_one_are_read_into_a_buffer_of_their_own() {
        let (mut a, b) = tokio::io::duplex(1 << 20);
        let mut io = FrameIo::new(b, FrameCodec::new());
        let mut wire = BytesMut::from(&PREFACE[..]);
        let mut large = Frame::new(FrameKind::Ping, 0);
        large.body = Bytes::from(vec![1u8; 300 * 1024]);
        large.encode_unchecked(&mut wire);
        let mut small = Frame::new(FrameKind::Ping, 0);
        small.body = Bytes::from_static(b"12345678");
        small.encode_unchecked(&mut wire);
        a.write_all(&wire).await.expect("write");
        let Some(Incoming::Frame(first)) = std::future::poll_fn(|cx| io.poll_next(cx)).await.expect("ok")
        else {
            panic!("the large frame")
        };
        let Some(Incoming::Frame(second)) = std::future::poll_fn(|cx| io.poll_next(cx)).await.expect("ok")
        else {
            panic!("the small frame")
        };
        assert_eq!((first.body.len(), second.body.as_ref()), (300 * 1024, &b"12345678"[..]));
        // The small frame is not in the large frame's allocation (nor its spare room).
        let start = first.body.as_ptr() as usize;
        let small_at = second.body.as_ptr() as usize;
        assert!(!(start..start + 600 * 1024).contains(&small_at), "the small frame shares the large buffer");
    }

    #[tokio::test]
    async fn oversized_length_prefix_does_not_grow_the_read_buffer() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut io = FrameIo::new(b, FrameCodec::new().with_max_frame_size(1024));
        let mut wire = PREFACE.to_vec();
        varint::encode(u32::MAX as u64, &mut wire);
        a.write_all(&wire).await.expect("write");
        let err = std::future::poll_fn(|cx| io.poll_next(cx)).await.expect_err("too large");
        assert!(matches!(err, WireError::FrameTooLarge { .. }));
        assert!(io.read_capacity() < 64 * 1024, "capacity {}", io.read_capacity());
    }
}
