//! The message codec seam: how a call's messages become frame bodies and back.
//!
//! Generated code names the codec by path (`::rpc_core::codec::ProstCodec`), so the
//! transport never knows the message format. [`ProstCodec`] is the one generated code uses:
//! protobuf through prost. [`BytesCodec`] passes bodies through as they are, for callers
//! that encode messages themselves (from JSON, with a schema known only at run time). A
//! codec only says how a message is encoded; where it goes is the connection's business
//! (straight into the bytes that go to the socket).

use bytes::{Bytes, BytesMut};

/// Encodes values of `T` into frame bodies and decodes them back.
///
/// Implemented on a zero-sized marker type; the functions take no `self`.
#[diagnostic::on_unimplemented(
    message = "`{T}` is not a message `{Self}` can send",
    label = "not a message of this codec",
    note = "with the default `ProstCodec`, a request or response is a struct with `#[derive(Clone, PartialEq, prost::Message)]`, derived with the prost rpc-core is built on (0.14, re-exported as `rpc_core::prost`), or `()` for an empty message"
)]
pub trait Codec<T>: Send + Sync + 'static {
    /// Why a body could not be decoded.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The exact encoded size of `item`, so the body buffer is allocated once.
    fn encoded_len(item: &T) -> usize;

    /// Appends `item` to `dst`, which has room for [`encoded_len`](Codec::encoded_len) bytes.
    fn encode(item: &T, dst: &mut BytesMut);

    /// Decodes a body. Byte fields may borrow `src` rather than copy it.
    fn decode(src: Bytes) -> Result<T, Self::Error>;

    /// Decodes the body of `len` bytes at the front of `src` (a run of received stream
    /// frames), taking those bytes off it whether or not it decodes. The default is
    /// `decode(src.split_to(len))`; a codec that can read the body in place saves making it a
    /// `Bytes` of its own.
    #[inline]
    fn decode_front(src: &mut Bytes, len: usize) -> Result<T, Self::Error> {
        Self::decode(src.split_to(len))
    }

    /// Encodes `item` into a body of its own, of exactly its size (an empty one allocates
    /// nothing). The runtime encodes messages straight into the connection's buffers; this
    /// is for a body that must be kept, to be sent again.
    fn encode_to_bytes(item: &T) -> Bytes {
        let len = Self::encoded_len(item);
        if len == 0 {
            return Bytes::new();
        }
        let mut buf = BytesMut::with_capacity(len);
        Self::encode(item, &mut buf);
        buf.freeze()
    }
}

/// A message [`ProstCodec`] carries: a protobuf message of the prost version this crate is
/// built on (`rpc_core::prost`), with a `Default`, or `()` for an empty message. The
/// `#[service]` macro asks it of every request and response type, so that a wrong one is
/// named where it is written, with what to write instead.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a protobuf message rpc-core can send",
    label = "not a prost 0.14 message",
    note = "a request or response is a struct with `#[derive(Clone, PartialEq, prost::Message)]`, derived with the prost rpc-core is built on (0.14, re-exported as `rpc_core::prost`), or `()` for an empty message",
    note = "streams go in the arguments: `requests: Streaming<Req>` for a stream of requests, `responses: StreamSender<Resp>` (returning `Result<(), Status>`) for a stream of responses"
)]
pub trait RpcMessage: prost::Message + Default + 'static {}

impl<T: prost::Message + Default + 'static> RpcMessage for T {}

/// Protobuf bodies through prost: the codec every generated service uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

impl<T: RpcMessage> Codec<T> for ProstCodec {
    type Error = prost::DecodeError;

    #[inline]
    fn encoded_len(item: &T) -> usize {
        item.encoded_len()
    }

    #[inline]
    fn encode(item: &T, dst: &mut BytesMut) {
        // Cannot fail: the caller reserved `encoded_len` bytes and BytesMut grows anyway.
        item.encode_raw(dst);
    }

    #[inline]
    fn decode(src: Bytes) -> Result<T, prost::DecodeError> {
        T::decode(src)
    }

    #[inline]
    fn decode_front(src: &mut Bytes, len: usize) -> Result<T, prost::DecodeError> {
        use bytes::Buf;
        // Byte fields are still slices of `src`; the body itself is never a `Bytes` of its own.
        let decoded = T::decode(Front { bytes: src, at: 0, end: len });
        // Taken off whole, even if it failed to decode part way.
        src.advance(len);
        decoded
    }
}

/// The first `end` bytes of a `Bytes`, read in place: a cursor, so that reading moves one
/// index rather than the `Bytes` itself, and a byte field is one slice of it.
struct Front<'a> {
    bytes: &'a Bytes,
    at: usize,
    end: usize,
}

impl bytes::Buf for Front<'_> {
    #[inline]
    fn remaining(&self) -> usize {
        self.end - self.at
    }

    #[inline]
    fn chunk(&self) -> &[u8] {
        &self.bytes[self.at..self.end]
    }

    #[inline]
    fn advance(&mut self, cnt: usize) {
        assert!(cnt <= self.end - self.at, "advance past the end of the body");
        self.at += cnt;
    }

    #[inline]
    fn copy_to_bytes(&mut self, len: usize) -> Bytes {
        assert!(len <= self.end - self.at, "copy past the end of the body");
        let slice = self.bytes.slice(self.at..self.at + len);
        self.at += len;
        slice
    }
}

/// Bodies as they are: the message is the encoded bytes, sent and received unchanged. For
/// callers that encode and decode messages themselves, such as a command-line client or a
/// gateway working from a schema loaded at run time.
///
/// A received body is a slice of the connection's read buffer (no copy); keeping it long
/// keeps that buffer alive, as for any `bytes` field.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec<Bytes> for BytesCodec {
    type Error = std::convert::Infallible;

    #[inline]
    fn encoded_len(item: &Bytes) -> usize {
        item.len()
    }

    #[inline]
    fn encode(item: &Bytes, dst: &mut BytesMut) {
        dst.extend_from_slice(item);
    }

    #[inline]
    fn decode(src: Bytes) -> Result<Bytes, std::convert::Infallible> {
        Ok(src)
    }

    #[inline]
    fn encode_to_bytes(item: &Bytes) -> Bytes {
        item.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Echo {
        #[prost(bytes = "bytes", tag = "1")]
        payload: Bytes,
    }

    #[test]
    fn prost_bodies_round_trip_and_bytes_fields_borrow_the_body() {
        let msg = Echo { payload: Bytes::from_static(&[7; 64]) };
        let body = <ProstCodec as Codec<Echo>>::encode_to_bytes(&msg);
        assert_eq!(body.len(), 66);
        let back: Echo = <ProstCodec as Codec<Echo>>::decode(body.clone()).expect("decodes");
        assert_eq!(back, msg);
        // The decoded payload points into the body: no copy was made.
        assert_eq!(back.payload.as_ptr(), body[2..].as_ptr());
    }

    #[test]
    fn front_bodies_decode_in_place_and_are_taken_off_whole() {
        let first = Echo { payload: Bytes::from_static(&[1; 40]) };
        let second = Echo { payload: Bytes::from_static(&[2; 3]) };
        let mut run = BytesMut::new();
        <ProstCodec as Codec<Echo>>::encode(&first, &mut run);
        <ProstCodec as Codec<Echo>>::encode(&second, &mut run);
        // A body that does not decode: a field whose length runs past the body's end (into
        // what follows it, which must not be read).
        run.extend_from_slice(&[0x0a, 0x05, 9, 9]);
        run.extend_from_slice(&[9; 8]);
        let mut run = run.freeze();
        let start = run.as_ptr();

        let decoded: Echo = <ProstCodec as Codec<Echo>>::decode_front(&mut run, 42).expect("decodes");
        assert_eq!(decoded, first);
        // The payload is a slice of the run, not a copy.
        assert_eq!(decoded.payload.as_ptr(), start.wrapping_add(2));
        let decoded: Echo = <ProstCodec as Codec<Echo>>::decode_front(&mut run, 5).expect("decodes");
        assert_eq!(decoded, second);
        let failed: Result<Echo, _> = <ProstCodec as Codec<Echo>>::decode_front(&mut run, 4);
        assert!(failed.is_err(), "a field past the body's end is an error, not a read past it");
        assert_eq!(&run[..], &[9; 8], "each body is taken off whole, decoded or not");
    }

    #[test]
    fn empty_messages_allocate_nothing() {
        let body = <ProstCodec as Codec<Echo>>::encode_to_bytes(&Echo::default());
        assert!(body.is_empty());
    }

    #[test]
    fn bytes_pass_through_without_a_copy() {
        let body = Bytes::from_static(b"\x08\x01");
        let kept = <BytesCodec as Codec<Bytes>>::encode_to_bytes(&body);
        assert_eq!(kept.as_ptr(), body.as_ptr());
        let mut buf = BytesMut::new();
        <BytesCodec as Codec<Bytes>>::encode(&body, &mut buf);
        assert_eq!(&buf[..], &body[..]);
        let back = <BytesCodec as Codec<Bytes>>::decode(body.clone()).expect("infallible");
        assert_eq!(back.as_ptr(), body.as_ptr());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let res: Result<Echo, _> = <ProstCodec as Codec<Echo>>::decode(Bytes::from_static(&[0xff]));
        assert!(res.is_err());
    }
}
