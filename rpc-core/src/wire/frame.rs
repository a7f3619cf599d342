//! The frame model: what one frame carries, and how its header is laid out as TLV fields.
//!
//! The layout is specified normatively in `docs/PROTOCOL.md`; this file implements it.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WireError;
use super::varint::{self, VarintError};
use crate::metadata::{Metadata, MetadataKey};

/// What a frame is for. Numbers are the byte on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Connection settings (limits), sent once by each side after the preface.
    Settings = 0x01,
    /// A unary call: method, deadline, metadata and the request message.
    Request = 0x02,
    /// The answer to a unary call: status, metadata and, when OK, the response message.
    Response = 0x03,
    /// The caller abandons a call; the server stops working on it.
    Cancel = 0x04,
    /// Liveness probe; the peer answers with a `Pong` carrying the same body.
    Ping = 0x05,
    /// The answer to a `Ping`.
    Pong = 0x06,
    /// The sender will accept no new calls on this connection.
    GoAway = 0x07,
    /// Opens a streaming call: method, deadline, metadata.
    StreamOpen = 0x08,
    /// One message of a stream, in either direction; flow-controlled.
    StreamMessage = 0x09,
    /// From the client: no more messages (half-close). From the server: the call is over,
    /// with its status and trailing metadata.
    StreamEnd = 0x0a,
    /// Flow-control credit for a stream, or for the whole connection (call id 0).
    WindowUpdate = 0x0b,
    /// From a server that announced `STREAM_ACCEPTS`: the stream's handler has started, so
    /// the method exists and nothing refused the call before it.
    StreamAccept = 0x0c,
}

impl FrameKind {
    /// The kind for a byte from the wire; `None` for kinds this version does not know,
    /// which a receiver skips.
    pub const fn from_u8(byte: u8) -> Option<FrameKind> {
        Some(match byte {
            0x01 => FrameKind::Settings,
            0x02 => FrameKind::Request,
            0x03 => FrameKind::Response,
            0x04 => FrameKind::Cancel,
            0x05 => FrameKind::Ping,
            0x06 => FrameKind::Pong,
            0x07 => FrameKind::GoAway,
            0x08 => FrameKind::StreamOpen,
            0x09 => FrameKind::StreamMessage,
            0x0a => FrameKind::StreamEnd,
            0x0b => FrameKind::WindowUpdate,
            0x0c => FrameKind::StreamAccept,
            _ => return None,
        })
    }
}

/// Frame flag bits. Unknown bits are ignored by receivers.
pub mod flags {
    /// On a `Response`: the server did not process the call (it was shutting down or at its
    /// concurrency limit), so the caller may safely send it again, elsewhere or later.
    pub const REFUSED: u8 = 0x01;
}

/// Header field tags. A receiver skips tags it does not know.
pub mod tag {
    /// Full method name, `/package.Service/Method` (UTF-8).
    pub const METHOD: u64 = 1;
    /// Time left for the call, in microseconds (varint), relative to receipt.
    pub const TIMEOUT: u64 = 2;
    /// Status code (varint, gRPC numbering); absent means OK.
    pub const STATUS_CODE: u64 = 3;
    /// Status message (UTF-8).
    pub const STATUS_MESSAGE: u64 = 4;
    /// One metadata entry: varint key length, key, value. Repeatable.
    pub const METADATA: u64 = 5;
    /// Settings: the largest frame the sender accepts (varint).
    pub const MAX_FRAME_SIZE: u64 = 6;
    /// Settings: how many calls the sender runs at once on this connection (varint).
    pub const MAX_CONCURRENT_CALLS: u64 = 7;
    /// Settings: the credit the sender grants the peer for each new stream, in bytes (varint).
    pub const INITIAL_WINDOW: u64 = 8;
    /// Window update: the credit granted, in bytes (varint).
    pub const WINDOW_INCREMENT: u64 = 9;
    /// Settings: the largest header the sender accepts (varint).
    pub const MAX_HEADER_SIZE: u64 = 10;
    /// Settings, from a server: 1 if it answers every stream whose handler starts with a
    /// `STREAM_ACCEPT` (varint).
    pub const STREAM_ACCEPTS: u64 = 11;
}

/// The header fields a frame can carry. Every field is optional on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// Tag 1: the full method name.
    pub method: Option<Bytes>,
    /// Tag 2: the caller's remaining time, at microsecond resolution.
    pub timeout: Option<Duration>,
    /// Tag 3: the status code; `None` means OK.
    pub status_code: Option<u32>,
    /// Tag 4: the status message.
    pub status_message: Option<Bytes>,
    /// Tag 5, repeated: metadata entries in order.
    pub metadata: Metadata,
    /// Tag 6: the sender's maximum frame size.
    pub max_frame_size: Option<u64>,
    /// Tag 7: the sender's maximum concurrent calls.
    pub max_concurrent_calls: Option<u64>,
    /// Tag 8: the credit the sender grants for each new stream.
    pub initial_window: Option<u64>,
    /// Tag 9: the credit a window update grants.
    pub window_increment: Option<u64>,
    /// Tag 10: the sender's maximum header size.
    pub max_header_size: Option<u64>,
    /// Tag 11: whether the sender (a server) sends `STREAM_ACCEPT`s.
    pub stream_accepts: Option<u64>,
}

/// One frame: a fixed part (kind, flags, call id), a TLV header and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is for.
    pub kind: FrameKind,
    /// Kind-specific flag bits; see [`flags`].
    pub flags: u8,
    /// The call this frame belongs to; 0 for connection-level frames.
    pub call_id: u64,
    /// The TLV header fields.
    pub header: Header,
    /// The body: a protobuf message for calls, opaque bytes for pings.
    pub body: Bytes,
}

impl Frame {
    /// A frame of `kind` for `call_id` with an empty header and body.
    pub fn new(kind: FrameKind, call_id: u64) -> Frame {
        Frame { kind, flags: 0, call_id, header: Header::default(), body: Bytes::new() }
    }

    /// The size of this frame's payload: everything after the length prefix.
    pub fn payload_len(&self) -> usize {
        self.fixed_len() + self.body.len()
    }

    /// The size of this frame on the wire, length prefix included.
    pub fn encoded_len(&self) -> usize {
        let payload = self.payload_len();
        varint::encoded_len(payload as u64) + payload
    }

    /// Kind, flags, call id, header length and header: everything but the body.
    fn fixed_len(&self) -> usize {
        let header = self.header.encoded_len();
        2 + varint::encoded_len(self.call_id) + varint::encoded_len(header as u64) + header
    }

    /// The payload size of a `STREAM_MESSAGE` frame of stream `call_id` with a body of
    /// `body_len` bytes and no header fields: what it costs in flow-control credit.
    pub(crate) fn message_payload_len(call_id: u64, body_len: usize) -> usize {
        2 + varint::encoded_len(call_id) + 1 + body_len
    }

    /// Appends a `STREAM_MESSAGE` frame of stream `call_id` whose body `write_body` encodes
    /// (exactly `body_len` bytes), without a header and without checking any limit: the common
    /// stream frame, without building a [`Frame`].
    #[inline]
    pub(crate) fn encode_message_with(
        call_id: u64,
        body_len: usize,
        dst: &mut BytesMut,
        write_body: impl FnOnce(&mut BytesMut),
    ) {
        let payload = Frame::message_payload_len(call_id, body_len);
        dst.reserve(varint::encoded_len(payload as u64) + payload);
        varint::encode(payload as u64, dst);
        dst.put_u8(FrameKind::StreamMessage as u8);
        dst.put_u8(0);
        varint::encode(call_id, dst);
        dst.put_u8(0);
        write_body(dst);
    }

    /// Appends the frame, length prefix included, without checking any limit.
    pub(crate) fn encode_unchecked(&self, dst: &mut BytesMut) {
        let header_len = self.header.encoded_len();
        let body = &self.body;
        Frame::encode_parts(
            self.kind,
            self.flags,
            self.call_id,
            &self.header,
            header_len,
            body.len(),
            dst,
            |dst| dst.put_slice(body),
        );
    }

    /// The payload size of a frame of call `call_id` with a header of `header_len` bytes and
    /// a body of `body_len`.
    pub(crate) fn payload_len_of(call_id: u64, header_len: usize, body_len: usize) -> usize {
        2 + varint::encoded_len(call_id) + varint::encoded_len(header_len as u64) + header_len + body_len
    }

    /// Appends a frame from its parts, without checking any limit: `write_body` appends the
    /// body, which must be exactly `body_len` bytes (so a message is encoded straight into
    /// `dst`, never into a buffer of its own). `header_len` is `header.encoded_len()`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn encode_parts(
        kind: FrameKind,
        flags: u8,
        call_id: u64,
        header: &Header,
        header_len: usize,
        body_len: usize,
        dst: &mut BytesMut,
        write_body: impl FnOnce(&mut BytesMut),
    ) {
        let payload = Frame::payload_len_of(call_id, header_len, body_len);
        dst.reserve(varint::encoded_len(payload as u64) + payload);
        varint::encode(payload as u64, dst);
        dst.put_u8(kind as u8);
        dst.put_u8(flags);
        varint::encode(call_id, dst);
        varint::encode(header_len as u64, dst);
        header.encode(dst);
        let before = dst.len();
        write_body(dst);
        debug_assert_eq!(dst.len() - before, body_len, "a body of the announced length");
    }

    /// Parses a payload (the bytes after the length prefix), with a header of at most
    /// `max_header` bytes. `Ok(None)` is a frame of a kind this version does not know, to be
    /// skipped.
    pub(crate) fn decode_payload(mut payload: Bytes, max_header: usize) -> Result<Option<Frame>, WireError> {
        if payload.len() < 2 {
            return Err(WireError::TruncatedHeader { what: "kind and flags" });
        }
        let Some(kind) = FrameKind::from_u8(payload[0]) else {
            return Ok(None);
        };
        let flags = payload[1];
        payload.advance(2);
        let call_id = take_varint(&mut payload, "call id")?;
        let header_len = take_varint(&mut payload, "header length")?;
        if header_len > max_header as u64 {
            return Err(WireError::HeaderTooLarge { len: header_len, max: max_header });
        }
        if header_len > payload.len() as u64 {
            return Err(WireError::TruncatedHeader { what: "header fields" });
        }
        let header_bytes = payload.split_to(header_len as usize);
        let mut header = Header::decode(header_bytes.clone())?;
        header.detach_from(&header_bytes);
        Ok(Some(Frame { kind, flags, call_id, header, body: payload }))
    }
}

impl Header {
    /// The size of the encoded TLV fields.
    pub fn encoded_len(&self) -> usize {
        let mut len = 0;
        if let Some(method) = &self.method {
            len += bytes_field_len(tag::METHOD, method.len());
        }
        if let Some(timeout) = self.timeout {
            len += varint_field_len(tag::TIMEOUT, timeout_micros(timeout));
        }
        if let Some(code) = self.status_code {
            len += varint_field_len(tag::STATUS_CODE, u64::from(code));
        }
        if let Some(message) = &self.status_message {
            len += bytes_field_len(tag::STATUS_MESSAGE, message.len());
        }
        for (key, value) in self.metadata.iter() {
            len += bytes_field_len(tag::METADATA, metadata_entry_len(key, value));
        }
        if let Some(max) = self.max_frame_size {
            len += varint_field_len(tag::MAX_FRAME_SIZE, max);
        }
        if let Some(max) = self.max_concurrent_calls {
            len += varint_field_len(tag::MAX_CONCURRENT_CALLS, max);
        }
        if let Some(window) = self.initial_window {
            len += varint_field_len(tag::INITIAL_WINDOW, window);
        }
        if let Some(increment) = self.window_increment {
            len += varint_field_len(tag::WINDOW_INCREMENT, increment);
        }
        if let Some(max) = self.max_header_size {
            len += varint_field_len(tag::MAX_HEADER_SIZE, max);
        }
        if let Some(accepts) = self.stream_accepts {
            len += varint_field_len(tag::STREAM_ACCEPTS, accepts);
        }
        len
    }

    /// Appends the TLV fields in tag order.
    fn encode(&self, dst: &mut BytesMut) {
        if let Some(method) = &self.method {
            put_bytes_field(dst, tag::METHOD, method);
        }
        if let Some(timeout) = self.timeout {
            put_varint_field(dst, tag::TIMEOUT, timeout_micros(timeout));
        }
        if let Some(code) = self.status_code {
            put_varint_field(dst, tag::STATUS_CODE, u64::from(code));
        }
        if let Some(message) = &self.status_message {
            put_bytes_field(dst, tag::STATUS_MESSAGE, message);
        }
        for (key, value) in self.metadata.iter() {
            varint::encode(tag::METADATA, dst);
            varint::encode(metadata_entry_len(key, value) as u64, dst);
            varint::encode(key.as_bytes().len() as u64, dst);
            dst.put_slice(key.as_bytes());
            dst.put_slice(value);
        }
        if let Some(max) = self.max_frame_size {
            put_varint_field(dst, tag::MAX_FRAME_SIZE, max);
        }
        if let Some(max) = self.max_concurrent_calls {
            put_varint_field(dst, tag::MAX_CONCURRENT_CALLS, max);
        }
        if let Some(window) = self.initial_window {
            put_varint_field(dst, tag::INITIAL_WINDOW, window);
        }
        if let Some(increment) = self.window_increment {
            put_varint_field(dst, tag::WINDOW_INCREMENT, increment);
        }
        if let Some(max) = self.max_header_size {
            put_varint_field(dst, tag::MAX_HEADER_SIZE, max);
        }
        if let Some(accepts) = self.stream_accepts {
            put_varint_field(dst, tag::STREAM_ACCEPTS, accepts);
        }
    }

    /// Moves the fields a call may keep for its whole life (metadata, a status message) out
    /// of `source`, the received bytes they were parsed from, into one allocation of their
    /// own: they must not keep the connection's read buffer (which may be megabytes, shared
    /// with other frames) alive for as long as a call holds them. The method name is not
    /// kept past routing, and stays a slice.
    fn detach_from(&mut self, source: &Bytes) {
        if self.metadata.is_empty() && self.status_message.is_none() {
            return;
        }
        let owned = Bytes::copy_from_slice(source);
        let rebase = |part: &Bytes| {
            if part.is_empty() {
                return Bytes::new();
            }
            // Every field is a slice of `source`.
            let offset = part.as_ptr() as usize - source.as_ptr() as usize;
            owned.slice(offset..offset + part.len())
        };
        if let Some(message) = &mut self.status_message {
            *message = rebase(message);
        }
        self.metadata.rebase(rebase);
    }

    /// Parses TLV fields; unknown tags are skipped, a repeated singular field keeps the last.
    fn decode(mut buf: Bytes) -> Result<Header, WireError> {
        let mut header = Header::default();
        while !buf.is_empty() {
            let tag = take_varint(&mut buf, "field tag")?;
            let len = take_varint(&mut buf, "field length")?;
            if len > buf.len() as u64 {
                return Err(WireError::TruncatedHeader { what: "field value" });
            }
            let mut value = buf.split_to(len as usize);
            match tag {
                tag::METHOD => header.method = Some(value),
                tag::TIMEOUT => {
                    let micros = field_varint(&value, "timeout")?;
                    header.timeout = Some(Duration::from_micros(micros));
                }
                tag::STATUS_CODE => {
                    let code = field_varint(&value, "status code")?;
                    // Codes past u32 are garbage; they map to UNKNOWN like any unknown code.
                    header.status_code = Some(u32::try_from(code).unwrap_or(u32::MAX));
                }
                tag::STATUS_MESSAGE => header.status_message = Some(value),
                tag::METADATA => {
                    let key_len = take_varint(&mut value, "metadata key length")?;
                    if key_len > value.len() as u64 {
                        return Err(WireError::TruncatedHeader { what: "metadata key" });
                    }
                    let key = MetadataKey::from_wire(value.split_to(key_len as usize))
                        .map_err(WireError::InvalidMetadataKey)?;
                    header.metadata.push_wire(key, value);
                }
                tag::MAX_FRAME_SIZE => header.max_frame_size = Some(field_varint(&value, "max frame size")?),
                tag::MAX_CONCURRENT_CALLS => {
                    header.max_concurrent_calls = Some(field_varint(&value, "max concurrent calls")?)
                }
                tag::INITIAL_WINDOW => header.initial_window = Some(field_varint(&value, "initial window")?),
                tag::WINDOW_INCREMENT => {
                    header.window_increment = Some(field_varint(&value, "window increment")?)
                }
                tag::MAX_HEADER_SIZE => {
                    header.max_header_size = Some(field_varint(&value, "max header size")?)
                }
                tag::STREAM_ACCEPTS => header.stream_accepts = Some(field_varint(&value, "stream accepts")?),
                _ => {} // Unknown (or reserved) tag: skipped, for forward compatibility.
            }
        }
        Ok(header)
    }
}

/// Timeouts travel in whole microseconds, rounded up so a tiny timeout is not sent as zero.
fn timeout_micros(timeout: Duration) -> u64 {
    let micros = timeout.as_nanos().div_ceil(1_000);
    u64::try_from(micros).unwrap_or(u64::MAX)
}

fn metadata_entry_len(key: &MetadataKey, value: &Bytes) -> usize {
    let key_len = key.as_bytes().len();
    varint::encoded_len(key_len as u64) + key_len + value.len()
}

fn bytes_field_len(tag: u64, len: usize) -> usize {
    varint::encoded_len(tag) + varint::encoded_len(len as u64) + len
}

fn varint_field_len(tag: u64, value: u64) -> usize {
    bytes_field_len(tag, varint::encoded_len(value))
}

fn put_bytes_field(dst: &mut BytesMut, tag: u64, value: &[u8]) {
    varint::encode(tag, dst);
    varint::encode(value.len() as u64, dst);
    dst.put_slice(value);
}

fn put_varint_field(dst: &mut BytesMut, tag: u64, value: u64) {
    varint::encode(tag, dst);
    varint::encode(varint::encoded_len(value) as u64, dst);
    varint::encode(value, dst);
}

/// Reads a varint from the front of `buf`, which is a complete frame: running out is a
/// truncated header, not a reason to wait for more bytes.
fn take_varint(buf: &mut Bytes, what: &'static str) -> Result<u64, WireError> {
    match varint::decode(buf) {
        Ok((value, len)) => {
            buf.advance(len);
            Ok(value)
        }
        Err(VarintError::Incomplete) => Err(WireError::TruncatedHeader { what }),
        Err(VarintError::TooLong) => Err(WireError::VarintTooLong),
    }
}

/// A varint-valued field must hold exactly one varint.
fn field_varint(value: &Bytes, what: &'static str) -> Result<u64, WireError> {
    match varint::decode(value) {
        Ok((v, len)) if len == value.len() => Ok(v),
        Ok(_) => Err(WireError::MalformedField { what }),
        Err(VarintError::Incomplete) => Err(WireError::TruncatedHeader { what }),
        Err(VarintError::TooLong) => Err(WireError::VarintTooLong),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: &Frame) -> Frame {
        let mut buf = BytesMut::new();
        frame.encode_unchecked(&mut buf);
        assert_eq!(buf.len(), frame.encoded_len());
        let (len, prefix) = varint::decode(&buf).expect("length prefix");
        assert_eq!(len as usize + prefix, buf.len());
        let payload = buf.freeze().slice(prefix..);
        Frame::decode_payload(payload, usize::MAX).expect("decodes").expect("known kind")
    }

    #[test]
    fn stream_messages_encode_as_the_general_encoder_does_on_both_sides_of_one_byte_varints() {
        // The stream message encoder writes the frame without building one: it must agree
        // with the general encoder, where the length and the call id take one byte or two.
        for call_id in [1, 127, 128, 300] {
            for body_len in [0, 60, 121, 122, 123, 124, 125, 200] {
                let mut frame = Frame::new(FrameKind::StreamMessage, call_id);
                frame.body = Bytes::from(vec![7u8; body_len]);
                let mut expected = BytesMut::new();
                frame.encode_unchecked(&mut expected);
                let mut direct = BytesMut::new();
                Frame::encode_message_with(call_id, body_len, &mut direct, |buf| buf.put_slice(&frame.body));
                assert_eq!(direct, expected, "call {call_id}, body of {body_len}");
            }
        }
    }

    #[test]
    fn every_header_field_round_trips() {
        let mut frame = Frame::new(FrameKind::Request, 300);
        frame.flags = flags::REFUSED;
        frame.header = Header {
            method: Some(Bytes::from_static(b"/a.B/C")),
            timeout: Some(Duration::from_micros(1_500_000)),
            status_code: Some(5),
            status_message: Some(Bytes::from_static(b"nope")),
            metadata: [("k", "v"), ("k", "w")].into_iter().collect(),
            max_frame_size: Some(1 << 22),
            max_concurrent_calls: Some(100),
            initial_window: Some(1 << 20),
            window_increment: Some(65_536),
            max_header_size: Some(16_384),
            stream_accepts: Some(1),
        };
        frame.body = Bytes::from_static(b"\x0a\x01x");
        assert_eq!(round_trip(&frame), frame);
    }

    #[test]
    fn kept_header_fields_do_not_point_into_the_received_bytes() {
        let mut frame = Frame::new(FrameKind::StreamOpen, 1);
        frame.header.method = Some(Bytes::from_static(b"/a.B/C"));
        frame.header.status_message = Some(Bytes::from_static(b"why"));
        frame.header.metadata = [("trace", "abc"), ("empty", "")].into_iter().collect();
        let mut buf = BytesMut::new();
        frame.encode_unchecked(&mut buf);
        let (_, prefix) = varint::decode(&buf).expect("length prefix");
        let received = buf.freeze().slice(prefix..);
        let range = received.as_ptr_range();
        let decoded = Frame::decode_payload(received.clone(), usize::MAX).expect("decodes").expect("known");
        assert_eq!(decoded, frame);
        let inside = |bytes: &Bytes| !bytes.is_empty() && range.contains(&bytes.as_ptr());
        assert!(!inside(decoded.header.status_message.as_ref().expect("message")));
        for (key, value) in decoded.header.metadata.iter() {
            assert!(!inside(key.as_bytes()) && !inside(value), "{key:?} still points into the read buffer");
        }
    }

    #[test]
    fn sub_microsecond_timeouts_round_up() {
        assert_eq!(timeout_micros(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_micros(Duration::from_nanos(1_001)), 2);
        assert_eq!(timeout_micros(Duration::MAX), u64::MAX);
    }

    #[test]
    fn unknown_tags_are_skipped() {
        // tag 99 (varint 0x63), length 3, value; then tag 1 (method) "m".
        let header = Bytes::from_static(&[0x63, 0x03, 1, 2, 3, 0x01, 0x01, b'm']);
        let decoded = Header::decode(header).expect("decodes");
        assert_eq!(decoded.method.as_deref(), Some(&b"m"[..]));
    }

    #[test]
    fn field_longer_than_header_is_truncated() {
        let header = Bytes::from_static(&[0x01, 0x05, b'a']);
        assert!(matches!(Header::decode(header), Err(WireError::TruncatedHeader { .. })));
    }

    #[test]
    fn unknown_kind_decodes_to_none() {
        let payload = Bytes::from_static(&[0x7f, 0x00, 0x01, 0x00]);
        assert_eq!(Frame::decode_payload(payload, usize::MAX).expect("skippable"), None);
    }

    #[test]
    fn invalid_metadata_key_is_rejected() {
        // METADATA field: key length 1, key "A", value "v".
        let header = Bytes::from_static(&[0x05, 0x03, 0x01, b'A', b'v']);
        assert!(matches!(Header::decode(header), Err(WireError::InvalidMetadataKey(_))));
    }
}
