//! [`FrameCodec`]: the tokio-util `Decoder`/`Encoder` that turns bytes into frames and back.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::frame::{Frame, FrameKind};
use super::varint::{self, VarintError};
use super::{
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_SIZE, MAGIC, MAX_FRAME_SIZE_CAP, PREFACE_LEN, VERSION,
    WireError,
};

/// Decodes and encodes frames, enforcing the frame-size limits.
///
/// The receive limit is checked against the length prefix *before* any of the body is
/// buffered, so a peer announcing a huge frame costs nothing but an error. When built with
/// [`expect_preface`](FrameCodec::expect_preface), the decoder first checks the peer's
/// 8-byte connection preface and fails on a wrong one.
///
/// ```
/// use bytes::BytesMut;
/// use rpc_core::internals::wire::{Frame, FrameCodec, FrameKind};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Frame::new(FrameKind::Ping, 0), &mut buf).unwrap();
/// let frame = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(frame.kind, FrameKind::Ping);
/// ```
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_recv: usize,
    max_send: usize,
    max_recv_header: usize,
    max_send_header: usize,
    awaiting_preface: bool,
}

/// How much of an announced frame is reserved at a time: a peer that announces a large frame
/// and sends little of it gets little memory.
const RESERVE_STEP: usize = 256 * 1024;

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    /// A codec with the default 4 MiB limit both ways, expecting no preface.
    pub fn new() -> FrameCodec {
        FrameCodec {
            max_recv: DEFAULT_MAX_FRAME_SIZE,
            max_send: DEFAULT_MAX_FRAME_SIZE,
            max_recv_header: DEFAULT_MAX_HEADER_SIZE,
            max_send_header: DEFAULT_MAX_HEADER_SIZE,
            awaiting_preface: false,
        }
    }

    /// Sets the largest frame payload this side accepts (at most [`MAX_FRAME_SIZE_CAP`]).
    pub fn with_max_frame_size(mut self, max: usize) -> FrameCodec {
        self.max_recv = max.min(MAX_FRAME_SIZE_CAP);
        self
    }

    /// Sets the largest frame header this side accepts.
    pub fn with_max_header_size(mut self, max: usize) -> FrameCodec {
        self.max_recv_header = max;
        self
    }

    /// Sets the encoder's header limit, normally from the peer's `SETTINGS`.
    pub fn set_max_send_header_size(&mut self, max: usize) {
        self.max_send_header = max;
    }

    /// Makes the decoder check the peer's connection preface before the first frame.
    pub fn expect_preface(mut self) -> FrameCodec {
        self.awaiting_preface = true;
        self
    }

    /// The largest frame payload this side accepts.
    pub fn max_frame_size(&self) -> usize {
        self.max_recv
    }

    /// The largest frame payload the encoder writes: the peer's announced limit.
    pub fn max_send_frame_size(&self) -> usize {
        self.max_send
    }

    /// Sets the encoder's limit, normally from the peer's `SETTINGS` (at most
    /// [`MAX_FRAME_SIZE_CAP`]).
    pub fn set_max_send_frame_size(&mut self, max: usize) {
        self.max_send = max.min(MAX_FRAME_SIZE_CAP);
    }

    /// Whether the peer's preface is still to come.
    pub fn is_awaiting_preface(&self) -> bool {
        self.awaiting_preface
    }

    fn decode_preface(&mut self, src: &mut BytesMut) -> Result<bool, WireError> {
        let seen = src.len().min(MAGIC.len());
        // Fail on the first wrong byte rather than waiting for all eight: an HTTP client
        // that sent "GET / HTTP/1.1" gets its answer at once.
        if src[..seen] != MAGIC[..seen] {
            let found = src[..src.len().min(PREFACE_LEN)].to_vec();
            return Err(WireError::BadPreface { found });
        }
        if src.len() < PREFACE_LEN {
            return Ok(false);
        }
        let version = src[MAGIC.len()];
        if version != VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        src.advance(PREFACE_LEN);
        self.awaiting_preface = false;
        Ok(true)
    }
}

impl FrameCodec {
    /// The next frame in `src`, taken off it. Plain `STREAM_MESSAGE`s (no flags, no header
    /// fields: the frames of a busy stream) come as [`StreamMessages`], without building a
    /// [`Frame`]: the one at the front, and with it those that follow it for the same stream,
    /// complete in `src`, up to `run` bytes in all. Anything else is parsed whole. `Ok(None)`:
    /// the frame is not complete yet (room for more of it is reserved, a bounded step at a
    /// time). Frames of unknown kinds are skipped.
    ///
    /// This is the one decoder: [`Decoder::decode`] is it, one frame at a time.
    pub(crate) fn decode_incoming(
        &mut self,
        src: &mut BytesMut,
        run: usize,
    ) -> Result<Option<Incoming>, WireError> {
        if self.awaiting_preface && !self.decode_preface(src)? {
            return Ok(None);
        }
        loop {
            let (len, prefix) = match varint::decode(src) {
                Ok(parsed) => parsed,
                Err(VarintError::Incomplete) => return Ok(None),
                Err(VarintError::TooLong) => return Err(WireError::VarintTooLong),
            };
            // The limit is checked from the prefix alone: nothing is reserved for an
            // oversized frame.
            if len > self.max_recv as u64 {
                return Err(WireError::FrameTooLarge { len, max: self.max_recv });
            }
            // Cannot overflow: `len` is at most the 1 GiB cap.
            let total = prefix + len as usize;
            if src.len() < total {
                src.reserve((total - src.len()).min(RESERVE_STEP));
                return Ok(None);
            }
            if let Some((call_id, _)) = plain_message(&src[prefix..total]) {
                // The run: this frame, then the plain messages of the same stream after it.
                let (mut end, mut count, mut cost) = (total, 1u32, len);
                while end < src.len() {
                    let Ok((next_len, next_prefix)) = varint::decode(&src[end..]) else { break };
                    if next_len > self.max_recv as u64 {
                        break;
                    }
                    // Cannot overflow: `next_len` is at most the 1 GiB cap.
                    let next_end = end + next_prefix + next_len as usize;
                    if next_end > src.len() || next_end > run {
                        break;
                    }
                    match plain_message(&src[end + next_prefix..next_end]) {
                        Some((id, _)) if id == call_id => {}
                        _ => break,
                    }
                    end = next_end;
                    count += 1;
                    cost += next_len;
                }
                let frames = src.split_to(end).freeze();
                return Ok(Some(Incoming::Messages(StreamMessages {
                    call_id,
                    frames,
                    count,
                    cost,
                    extra: 0,
                })));
            }
            src.advance(prefix);
            let payload = src.split_to(len as usize).freeze();
            if let Some(frame) = Frame::decode_payload(payload, self.max_recv_header)? {
                return Ok(Some(Incoming::Frame(frame)));
            }
            // A kind this version does not know: skipped.
        }
    }
}

/// If `payload` is a `STREAM_MESSAGE` with no flags and no header fields: its call id and the
/// length of its fixed part.
#[inline]
fn plain_message(payload: &[u8]) -> Option<(u64, usize)> {
    let (&[kind, flags], rest) = payload.split_first_chunk::<2>()?;
    if kind != FrameKind::StreamMessage as u8 || flags != 0 {
        return None;
    }
    let (call_id, id_len) = varint::decode(rest).ok()?;
    // A header length of zero is the single byte 0.
    (rest.get(id_len) == Some(&0)).then_some((call_id, 2 + id_len + 1))
}

/// A frame as [`FrameCodec::decode_incoming`] gives it.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Plain stream messages.
    Messages(StreamMessages),
    /// Any other frame.
    Frame(Frame),
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        Ok(self.decode_incoming(src, 0)?.map(|incoming| match incoming {
            Incoming::Frame(frame) => frame,
            Incoming::Messages(mut messages) => {
                let mut frame = Frame::new(FrameKind::StreamMessage, messages.call_id);
                if let Some((body, _)) = messages.next_message() {
                    frame.body = body;
                }
                frame
            }
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        self.decode_incoming_eof(src).map(|_| None)
    }
}

impl FrameCodec {
    /// [`decode_incoming`](Self::decode_incoming) once the byte stream has ended: the last
    /// complete frame, `Ok(None)` at a clean end between frames, or the error saying what was
    /// cut short.
    pub(crate) fn decode_incoming_eof(&mut self, src: &mut BytesMut) -> Result<Option<Incoming>, WireError> {
        if let Some(incoming) = self.decode_incoming(src, 0)? {
            return Ok(Some(incoming));
        }
        if src.is_empty() {
            return Ok(None);
        }
        if self.awaiting_preface {
            return Err(WireError::TruncatedPreface { received: src.len() });
        }
        let expected = match varint::decode(src) {
            Ok((len, prefix)) => Some(len + prefix as u64),
            Err(_) => None,
        };
        Err(WireError::TruncatedFrame { received: src.len(), expected })
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let header = frame.header.encoded_len();
        if header > self.max_send_header {
            return Err(WireError::HeaderTooLarge { len: header as u64, max: self.max_send_header });
        }
        let len = frame.payload_len();
        if len > self.max_send {
            return Err(WireError::FrameTooLarge { len: len as u64, max: self.max_send });
        }
        frame.encode_unchecked(dst);
        Ok(())
    }
}

/// Plain `STREAM_MESSAGE` frames of one stream, whole, one after the other, as
/// [`FrameCodec::decode_incoming`] takes them off a read: what a stream's receiver reads its
/// messages from. They stay one slice of the read buffer until the receiver takes each
/// message out ([`next_message`](Self::next_message)).
#[derive(Debug, Clone)]
pub(crate) struct StreamMessages {
    pub(crate) call_id: u64,
    /// The frames, length prefixes included.
    frames: Bytes,
    /// How many frames are left in `frames`.
    pub(crate) count: u32,
    /// Their payload lengths together: the flow-control credit they use.
    pub(crate) cost: u64,
    /// Credit the first message used beyond its frame here (the header fields of a frame
    /// that came the slow way).
    extra: u64,
}

impl StreamMessages {
    /// The next message's body and the credit its frame used, taken out.
    pub(crate) fn next_message(&mut self) -> Option<(Bytes, u64)> {
        self.next_message_with(|frames, len| frames.split_to(len))
    }

    /// The next message, taken out and read by `read` (from the front of the frames, whose
    /// body length it is given and must take off them), and the credit its frame used.
    #[inline]
    pub(crate) fn next_message_with<R>(
        &mut self,
        read: impl FnOnce(&mut Bytes, usize) -> R,
    ) -> Option<(R, u64)> {
        let (len, prefix) = varint::decode(&self.frames).ok()?;
        let (_, id_len) = varint::decode(self.frames.get(prefix + 2..)?).ok()?;
        // Prefix, kind, flags, call id, and the header length of zero.
        let head = prefix + 2 + id_len + 1;
        let end = prefix + usize::try_from(len).ok()?;
        if end > self.frames.len() || head > end {
            return None;
        }
        self.frames.advance(head);
        let body_len = end - head;
        let rest = self.frames.len() - body_len;
        let read = read(&mut self.frames, body_len);
        debug_assert_eq!(self.frames.len(), rest, "the reader took its body, no more, no less");
        self.count = self.count.saturating_sub(1);
        let cost = len + std::mem::take(&mut self.extra);
        self.cost = self.cost.saturating_sub(cost);
        Some((read, cost))
    }

    /// Whether every message has been taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The memory these messages hold while they wait for their consumer: their bytes, and
    /// the record that holds them.
    pub(crate) fn held_bytes(&self) -> usize {
        self.frames.len() + std::mem::size_of::<StreamMessages>()
    }
}

impl From<Frame> for StreamMessages {
    /// A `STREAM_MESSAGE` that came the slow way (with flags or header fields, which a
    /// receiver ignores), rewritten as a plain one at the same cost.
    fn from(frame: Frame) -> StreamMessages {
        let cost = frame.payload_len() as u64;
        let plain = Frame::message_payload_len(frame.call_id, frame.body.len()) as u64;
        let mut frames = BytesMut::new();
        Frame::encode_message_with(frame.call_id, frame.body.len(), &mut frames, |buf| {
            buf.extend_from_slice(&frame.body)
        });
        StreamMessages {
            call_id: frame.call_id,
            frames: frames.freeze(),
            count: 1,
            cost,
            extra: cost - plain,
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        self.encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes};

    use super::*;
    use crate::wire::{FrameKind, PREFACE};

    fn encoded(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(frame, &mut buf).expect("encodes");
        buf
    }

    #[test]
    fn frame_arriving_byte_by_byte_decodes_once_complete() {
        let mut frame = Frame::new(FrameKind::Request, 7);
        frame.body = Bytes::from_static(b"hello");
        let wire = encoded(&frame);
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::new();
        for (i, byte) in wire.iter().enumerate() {
            buf.put_u8(*byte);
            let out = codec.decode(&mut buf).expect("no error");
            assert_eq!(out.is_some(), i == wire.len() - 1, "byte {i}");
            if let Some(decoded) = out {
                assert_eq!(decoded, frame);
            }
        }
    }

    fn stream_message(id: u64, body: &'static [u8]) -> Frame {
        let mut frame = Frame::new(FrameKind::StreamMessage, id);
        frame.body = Bytes::from_static(body);
        frame
    }

    /// The next frame through the one decoder, as the connection reads it.
    fn next(codec: &mut FrameCodec, buf: &mut BytesMut, run: usize) -> Option<Incoming> {
        codec.decode_incoming(buf, run).expect("decodes")
    }

    #[test]
    fn plain_messages_of_one_stream_come_off_together_and_read_back_one_by_one() {
        let first = stream_message(300, b"first");
        let second = stream_message(300, b"");
        let other = stream_message(7, b"other");
        let mut buf = encoded(&first);
        buf.extend_from_slice(&encoded(&second));
        buf.extend_from_slice(&encoded(&other));
        buf.extend_from_slice(&encoded(&Frame::new(FrameKind::Ping, 0)));
        let mut codec = FrameCodec::new();
        let Some(Incoming::Messages(mut run)) = next(&mut codec, &mut buf, 1024) else { panic!("a run") };
        assert_eq!((run.call_id, run.count), (300, 2), "the next stream's message is not in the run");
        assert_eq!(run.cost, (first.payload_len() + second.payload_len()) as u64);
        assert_eq!(run.next_message(), Some((Bytes::from_static(b"first"), first.payload_len() as u64)));
        assert_eq!(run.next_message(), Some((Bytes::new(), second.payload_len() as u64)));
        assert!(run.is_empty() && run.next_message().is_none());
        let Some(Incoming::Messages(mut run)) = next(&mut codec, &mut buf, 0) else { panic!("a run") };
        assert_eq!((run.call_id, run.count), (7, 1));
        assert_eq!(run.next_message().map(|(body, _)| body), Some(Bytes::from_static(b"other")));
        let Some(Incoming::Frame(ping)) = next(&mut codec, &mut buf, 1024) else { panic!("a frame") };
        assert_eq!(ping.kind, FrameKind::Ping);
        // Through the public decoder, a plain message is an ordinary frame, one at a time.
        let mut again = encoded(&first);
        again.extend_from_slice(&encoded(&second));
        assert_eq!(FrameCodec::new().decode(&mut again).expect("decodes"), Some(first));
        assert_eq!(FrameCodec::new().decode(&mut again).expect("decodes"), Some(second));
    }

    #[test]
    fn a_run_stops_at_its_size_and_at_an_incomplete_frame() {
        let message = stream_message(1, &[0; 100]);
        let mut buf = BytesMut::new();
        for _ in 0..10 {
            buf.extend_from_slice(&encoded(&message));
        }
        let frame = buf.len() / 10;
        buf.truncate(buf.len() - 1);
        let mut codec = FrameCodec::new();
        let Some(Incoming::Messages(run)) = next(&mut codec, &mut buf, 3 * frame + 1) else {
            panic!("a run")
        };
        assert_eq!(run.count, 3, "up to the run's size");
        let Some(Incoming::Messages(run)) = next(&mut codec, &mut buf, usize::MAX) else { panic!("a run") };
        assert_eq!(run.count, 6, "the incomplete tenth waits");
        assert!(next(&mut codec, &mut buf, usize::MAX).is_none());
    }

    #[test]
    fn stream_messages_with_flags_or_header_fields_are_parsed_whole_at_the_same_cost() {
        let mut with_header = stream_message(1, b"x");
        with_header.header.metadata.insert("k", "v");
        let mut with_flags = stream_message(1, b"x");
        with_flags.flags = 0x80;
        for frame in [with_header, with_flags] {
            let mut buf = encoded(&frame);
            let Some(Incoming::Frame(parsed)) = next(&mut FrameCodec::new(), &mut buf, 1024) else {
                panic!("parsed whole")
            };
            assert_eq!(parsed, frame);
            let mut slow = StreamMessages::from(parsed);
            assert_eq!((slow.call_id, slow.cost), (1, frame.payload_len() as u64));
            assert_eq!(slow.next_message(), Some((Bytes::from_static(b"x"), frame.payload_len() as u64)));
        }
        // Incomplete: nothing is taken.
        let plain = encoded(&stream_message(1, b"body"));
        let mut partial = BytesMut::from(&plain[..plain.len() - 1]);
        assert!(next(&mut FrameCodec::new(), &mut partial, 1024).is_none());
        assert_eq!(partial.len(), plain.len() - 1);
    }

    #[test]
    fn oversized_frame_is_rejected_before_allocation() {
        let mut codec = FrameCodec::new().with_max_frame_size(1024);
        let mut buf = BytesMut::with_capacity(16);
        varint::encode(1 << 30, &mut buf);
        let capacity = buf.capacity();
        let err = codec.decode(&mut buf).expect_err("too large");
        assert!(matches!(err, WireError::FrameTooLarge { len, max: 1024 } if len == 1 << 30));
        assert_eq!(buf.capacity(), capacity, "nothing was reserved for the body");
    }

    #[test]
    fn frame_at_the_limit_is_accepted_and_one_past_is_not() {
        let mut frame = Frame::new(FrameKind::Request, 1);
        frame.body = Bytes::from(vec![0u8; 100]);
        let limit = frame.payload_len();
        let mut at_limit = encoded(&frame);
        let mut codec = FrameCodec::new().with_max_frame_size(limit);
        assert!(codec.decode(&mut at_limit).expect("at the limit").is_some());

        let mut codec = FrameCodec::new().with_max_frame_size(limit - 1);
        let mut over = encoded(&frame);
        assert!(matches!(codec.decode(&mut over), Err(WireError::FrameTooLarge { .. })));

        let mut sender = FrameCodec::new();
        sender.set_max_send_frame_size(limit - 1);
        let err = sender.encode(&frame, &mut BytesMut::new()).expect_err("sender checks too");
        assert!(matches!(err, WireError::FrameTooLarge { .. }));
    }

    #[test]
    fn header_over_the_limit_is_rejected_both_ways() {
        let mut frame = Frame::new(FrameKind::Request, 1);
        frame.header.metadata.insert("k", Bytes::from(vec![b'v'; 200]));
        let mut buf = BytesMut::new();
        FrameCodec::new().encode(&frame, &mut buf).expect("under the default");
        let err = FrameCodec::new().with_max_header_size(100).decode(&mut buf).expect_err("over");
        assert!(matches!(err, WireError::HeaderTooLarge { max: 100, .. }), "{err:?}");

        let mut sender = FrameCodec::new();
        sender.set_max_send_header_size(100);
        let err = sender.encode(&frame, &mut BytesMut::new()).expect_err("sender checks too");
        assert!(matches!(err, WireError::HeaderTooLarge { max: 100, .. }), "{err:?}");
    }

    #[test]
    fn a_huge_limit_is_capped_and_an_announced_frame_reserves_a_step_at_a_time() {
        let mut codec = FrameCodec::new().with_max_frame_size(usize::MAX);
        assert_eq!(codec.max_frame_size(), MAX_FRAME_SIZE_CAP);
        let mut buf = BytesMut::new();
        varint::encode(MAX_FRAME_SIZE_CAP as u64, &mut buf);
        assert!(codec.decode(&mut buf).expect("waits for the body").is_none());
        assert!(buf.capacity() <= RESERVE_STEP + 64, "reserved {}", buf.capacity());
        let mut over = BytesMut::new();
        varint::encode(u64::MAX, &mut over);
        assert!(matches!(codec.decode(&mut over), Err(WireError::FrameTooLarge { .. })));
    }

    #[test]
    fn random_input_never_panics_the_decoder() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..20_000 {
            let len = rng.usize(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if round % 2 == 0 && !bytes.is_empty() {
                // A plausible length prefix makes the decoder look inside the payload.
                bytes[0] = (len - 1).min(127) as u8;
            }
            if round % 3 == 0 && bytes.len() > 2 {
                // And a stream message's kind byte sends it down the fast path.
                bytes[1] = FrameKind::StreamMessage as u8;
                bytes[2] = 0;
            }
            let max = [usize::MAX, 1 << 30, 16, 0][round % 4];
            let mut codec = FrameCodec::new().with_max_frame_size(max).with_max_header_size(max);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(incoming)) = codec.decode_incoming(&mut buf, round % 200) {
                if let Incoming::Messages(mut run) = incoming {
                    while run.next_message().is_some() {}
                }
            }
            let _ = codec.decode_eof(&mut buf);
        }
    }

    #[test]
    fn varint_longer_than_ten_bytes_is_rejected() {
        let mut buf = BytesMut::from(&[0xffu8; 11][..]);
        let err = FrameCodec::new().decode(&mut buf).expect_err("too long");
        assert!(matches!(err, WireError::VarintTooLong));
    }

    #[test]
    fn truncated_frame_at_eof_is_a_typed_error() {
        let mut frame = Frame::new(FrameKind::Request, 1);
        frame.body = Bytes::from_static(b"0123456789");
        let wire = encoded(&frame);
        let mut buf = BytesMut::from(&wire[..wire.len() - 3]);
        let err = FrameCodec::new().decode_eof(&mut buf).expect_err("truncated");
        match err {
            WireError::TruncatedFrame { received, expected } => {
                assert_eq!(received, wire.len() - 3);
                assert_eq!(expected, Some(wire.len() as u64));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_header_inside_a_complete_frame_is_a_typed_error() {
        // Length 4: kind, flags, call id 1, header length 9 -- but no header bytes follow.
        let mut buf = BytesMut::from(&[0x04, 0x02, 0x00, 0x01, 0x09][..]);
        let err = FrameCodec::new().decode(&mut buf).expect_err("truncated header");
        assert!(matches!(err, WireError::TruncatedHeader { .. }), "{err:?}");
    }

    #[test]
    fn wrong_preface_is_rejected_on_the_first_wrong_byte() {
        let mut codec = FrameCodec::new().expect_preface();
        let mut buf = BytesMut::from(&b"GET"[..]);
        let err = codec.decode(&mut buf).expect_err("bad preface");
        assert!(matches!(err, WireError::BadPreface { ref found } if found == b"GET"));
        assert!(err.to_string().contains("does not speak this protocol"), "{err}");
        let hello = WireError::BadPreface { found: vec![0x16, 0x03, 0x01, 0x02, 0x00] };
        assert!(hello.to_string().contains("the peer speaks TLS"), "{hello}");
    }

    #[test]
    fn unsupported_version_is_reported() {
        let mut codec = FrameCodec::new().expect_preface();
        let mut preface = PREFACE;
        preface[6] = 9;
        let mut buf = BytesMut::from(&preface[..]);
        let err = codec.decode(&mut buf).expect_err("version");
        assert!(matches!(err, WireError::UnsupportedVersion(9)));
    }

    #[test]
    fn preface_then_frames_decode() {
        let mut codec = FrameCodec::new().expect_preface();
        let mut buf = BytesMut::from(&PREFACE[..4]);
        assert!(codec.decode(&mut buf).expect("partial preface is fine").is_none());
        buf.put_slice(&PREFACE[4..]);
        buf.put_slice(&encoded(&Frame::new(FrameKind::Ping, 0)));
        let frame = codec.decode(&mut buf).expect("ok").expect("frame");
        assert_eq!(frame.kind, FrameKind::Ping);
        assert!(!codec.is_awaiting_preface());
    }

    #[test]
    fn unknown_frame_kinds_are_skipped() {
        let mut buf = BytesMut::from(&[0x03, 0x7e, 0x00, 0x00][..]);
        buf.put_slice(&encoded(&Frame::new(FrameKind::Pong, 0)));
        let frame = FrameCodec::new().decode(&mut buf).expect("ok").expect("frame");
        assert_eq!(frame.kind, FrameKind::Pong);
    }
}
