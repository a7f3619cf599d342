//! Unsigned LEB128 varints, as protobuf writes them: seven bits a byte, low bits first,
//! the high bit set on every byte but the last. A value takes at most ten bytes.
//!
//! Encoding is prost's. Decoding is ours: reading a frame's length prefix from a socket
//! buffer needs three outcomes (a value, "not all here yet", or "invalid") without
//! consuming input, and prost's decoder reports the last two alike.

use bytes::BufMut;

/// The most bytes a varint may take on the wire (a `u64` needs ten).
pub const MAX_VARINT_LEN: usize = 10;

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended before the varint's last byte.
    Incomplete,
    /// More than ten bytes, or a tenth byte that overflows 64 bits.
    TooLong,
}

/// Reads a varint from the start of `buf`, returning its value and how many bytes it took.
#[inline]
pub(crate) fn decode(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    // Fast path: one byte covers every value below 128 (kinds, small ids, short lengths).
    match buf.first() {
        None => return Err(VarintError::Incomplete),
        Some(&b) if b < 0x80 => return Ok((u64::from(b), 1)),
        Some(_) => {}
    }
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_LEN).enumerate() {
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            // The tenth byte may only carry the 64th bit.
            return Err(VarintError::TooLong);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= MAX_VARINT_LEN { Err(VarintError::TooLong) } else { Err(VarintError::Incomplete) }
}

/// Appends `value` as a varint.
#[inline]
pub(crate) fn encode(value: u64, dst: &mut impl BufMut) {
    prost::encoding::encode_varint(value, dst);
}

/// How many bytes `value` takes as a varint.
#[inline]
pub(crate) fn encoded_len(value: u64) -> usize {
    prost::encoding::encoded_len_varint(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_boundaries() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            encode(value, &mut buf);
            assert_eq!(buf.len(), encoded_len(value), "length of {value}");
            assert_eq!(decode(&buf), Ok((value, buf.len())), "value {value}");
        }
    }

    #[test]
    fn known_encodings() {
        let mut buf = Vec::new();
        encode(300, &mut buf);
        assert_eq!(buf, [0xac, 0x02]);
    }

    #[test]
    fn incomplete_input_asks_for_more() {
        assert_eq!(decode(&[]), Err(VarintError::Incomplete));
        assert_eq!(decode(&[0x80, 0x80]), Err(VarintError::Incomplete));
    }

    #[test]
    fn eleven_byte_varint_is_too_long() {
        assert_eq!(decode(&[0xff; 11]), Err(VarintError::TooLong));
        assert_eq!(decode(&[0x80; 10]), Err(VarintError::TooLong));
    }

    #[test]
    fn tenth_byte_overflowing_64_bits_is_too_long() {
        let mut buf = [0xff; 10];
        buf[9] = 0x02;
        assert_eq!(decode(&buf), Err(VarintError::TooLong));
        buf[9] = 0x01;
        assert_eq!(decode(&buf), Ok((u64::MAX, 10)));
    }
}
