//! The message codec seam: how a call's messages become frame bodies and back.
//!
//! Generated code names the codec by path (`::rpc_core::codec::ProstCodec`), so the
//! transport never knows the message format. [`ProstCodec`] is the one shipped: protobuf
//! through prost.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// Bodies up to this size are carved out of a per-thread buffer rather than allocated one
/// by one.
const SHARED_BODY_MAX: usize = 4 * 1024;

/// The size of the per-thread buffer small bodies are carved from: one allocation for some
/// hundreds of small messages.
const SHARED_BODY_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The unused rest of this thread's current chunk for small bodies.
    static BODIES: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Encodes values of `T` into frame bodies and decodes them back.
///
/// Implemented on a zero-sized marker type; the functions take no `self`.
pub trait Codec<T>: Send + Sync + 'static {
    /// Why a body could not be decoded.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The exact encoded size of `item`, so the body buffer is allocated once.
    fn encoded_len(item: &T) -> usize;

    /// Appends `item` to `dst`, which has room for [`encoded_len`](Codec::encoded_len) bytes.
    fn encode(item: &T, dst: &mut BytesMut);

    /// Decodes a body. Byte fields may borrow `src` rather than copy it.
    fn decode(src: Bytes) -> Result<T, Self::Error>;

    /// Encodes `item` into a body of exactly its size. A small body is carved out of a
    /// per-thread 64 KiB chunk, so that encoding it allocates nothing most of the time (the
    /// chunk is freed once every body cut from it is dropped); a larger one gets an
    /// allocation of its own; an empty one, none.
    fn encode_to_bytes(item: &T) -> Bytes {
        let len = Self::encoded_len(item);
        if len == 0 {
            return Bytes::new();
        }
        if len <= SHARED_BODY_MAX {
            // `try_`: a codec whose `encode` encodes another body falls back to allocating.
            let carved = BODIES.with(|bodies| {
                let mut bodies = bodies.try_borrow_mut().ok()?;
                if bodies.capacity() < len {
                    *bodies = BytesMut::with_capacity(SHARED_BODY_CHUNK);
                }
                Self::encode(item, &mut bodies);
                Some(bodies.split().freeze())
            });
            if let Some(body) = carved {
                return body;
            }
        }
        let mut buf = BytesMut::with_capacity(len);
        Self::encode(item, &mut buf);
        buf.freeze()
    }
}

/// Protobuf bodies through prost: the codec every generated service uses.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProstCodec;

impl<T> Codec<T> for ProstCodec
where
    T: prost::Message + Default + 'static,
{
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
    fn small_bodies_share_a_chunk_and_large_ones_get_their_own() {
        let small = Echo { payload: Bytes::from_static(&[1; 100]) };
        let a = <ProstCodec as Codec<Echo>>::encode_to_bytes(&small);
        let b = <ProstCodec as Codec<Echo>>::encode_to_bytes(&small);
        assert_eq!((a.len(), b.len()), (102, 102));
        // Carved one after the other out of the same chunk.
        assert_eq!(a.as_ptr().wrapping_add(a.len()), b.as_ptr());
        let decoded: Echo = <ProstCodec as Codec<Echo>>::decode(b).expect("decodes");
        assert_eq!(decoded, small);
        let large = Echo { payload: Bytes::from(vec![2; 2 * SHARED_BODY_MAX]) };
        let body = <ProstCodec as Codec<Echo>>::encode_to_bytes(&large);
        assert_eq!(body.len(), <ProstCodec as Codec<Echo>>::encoded_len(&large));
        assert_eq!(<ProstCodec as Codec<Echo>>::decode(body).expect("decodes"), large);
    }

    #[test]
    fn empty_messages_allocate_nothing() {
        let body = <ProstCodec as Codec<Echo>>::encode_to_bytes(&Echo::default());
        assert!(body.is_empty());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let res: Result<Echo, _> = <ProstCodec as Codec<Echo>>::decode(Bytes::from_static(&[0xff]));
        assert!(res.is_err());
    }
}
