//! The wire protocol, version 1: connection preface, frames, and their codec.
//!
//! `docs/PROTOCOL.md` is the normative specification; this module is its implementation.
//! In short, after an 8-byte preface each side exchanges frames:
//!
//! ```text
//! frame   = length:varint payload
//! payload = kind:u8 flags:u8 call_id:varint header_len:varint header body
//! header  = *(tag:varint len:varint value)
//! ```

mod codec;
mod frame;
pub(crate) mod varint;

pub use codec::FrameCodec;
pub(crate) use codec::{Incoming, StreamMessages};
pub use frame::{Frame, FrameKind, Header, flags, tag};
pub use varint::MAX_VARINT_LEN;

/// A map keyed by call id, for a connection's calls and streams. The hash is foldhash with a
/// per-map random seed: a few times faster than the standard SipHash on these integer keys,
/// and still seeded, since a peer chooses the ids on the receiving side.
pub(crate) type CallMap<V> = std::collections::HashMap<u64, V, foldhash::fast::RandomState>;

use crate::metadata::InvalidMetadataKey;

/// The first six bytes of the preface: `0x89 'R' 'P' 'C' '\r' '\n'`.
///
/// The high-bit first byte rejects 7-bit text peers and the CR LF catches line-ending
/// translation, the same tricks as PNG's signature.
pub const MAGIC: [u8; 6] = [0x89, b'R', b'P', b'C', b'\r', b'\n'];

/// The protocol version this implementation speaks.
pub const VERSION: u8 = 1;

/// The length of the connection preface.
pub const PREFACE_LEN: usize = 8;

/// The preface each side sends first: magic, version, and a reserved zero byte.
pub const PREFACE: [u8; PREFACE_LEN] =
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], MAGIC[4], MAGIC[5], VERSION, 0];

/// The default largest frame payload a peer accepts: 4 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 4 * 1024 * 1024;

/// The largest frame limit that may be configured or announced: 1 GiB. Larger limits are
/// clamped to it.
pub const MAX_FRAME_SIZE_CAP: usize = 1024 * 1024 * 1024;

/// The least frame limit a peer may announce: 16 KiB. A smaller `MAX_FRAME_SIZE` is a
/// protocol violation, and configured limits are raised to it.
pub const MIN_MAX_FRAME_SIZE: usize = 16 * 1024;

/// The least header limit a peer may announce: 1 KiB. A smaller `MAX_HEADER_SIZE` is a
/// protocol violation, and configured limits are raised to it.
pub const MIN_MAX_HEADER_SIZE: usize = 1024;

/// The default largest header (the TLV fields: method, status, metadata...) a peer accepts:
/// 16 KiB. It bounds the metadata a call can carry.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 16 * 1024;

/// The longest `TIMEOUT` that sets a deadline: 2^40 microseconds, about 12.7 days. A longer
/// one means no deadline.
pub const MAX_TIMEOUT: std::time::Duration = std::time::Duration::from_micros(1 << 40);

/// The credit each side has for a new stream until the peer's `SETTINGS` say more, and the
/// least a peer may announce: 64 KiB.
pub const MIN_STREAM_WINDOW: u64 = 64 * 1024;

/// The connection-level credit each side starts with, and the least a peer may grant: 1 MiB.
/// A receiver grants more with a `WINDOW_UPDATE` on call id 0.
pub const MIN_CONNECTION_WINDOW: u64 = 1024 * 1024;

/// What the first bytes of a connection that are not the preface say about the peer.
fn why_not_the_preface(found: &[u8]) -> &'static str {
    // A TLS record: content type 22 (handshake), then a major version of 3.
    if let [0x16, 0x03, ..] | [0x16] = found {
        "the peer speaks TLS (this is a TLS ClientHello), and this side plaintext"
    } else {
        "the peer does not speak this protocol"
    }
}

/// Everything that can go wrong reading or writing frames. Each is fatal to the
/// connection it happened on, and to nothing else.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer's first bytes are not the preface: it does not speak this protocol (or
    /// speaks it inside TLS, which the message says when the bytes start a TLS handshake).
    #[error("bad connection preface {found:02x?}: {}", why_not_the_preface(found))]
    BadPreface {
        /// Up to eight bytes the peer sent.
        found: Vec<u8>,
    },
    /// The connection closed inside the preface.
    #[error("connection closed after {received} bytes of the 8-byte preface")]
    TruncatedPreface {
        /// Bytes received.
        received: usize,
    },
    /// The peer sent no preface within the time allowed.
    #[error("no connection preface within the timeout")]
    PrefaceTimeout,
    /// The peer speaks another version of the protocol.
    #[error("unsupported protocol version {0} (this peer speaks version {VERSION})")]
    UnsupportedVersion(u8),
    /// A frame's header is larger than the receiver's (or, sending, the peer's) limit.
    #[error("frame header of {len} bytes exceeds the limit of {max} bytes")]
    HeaderTooLarge {
        /// The header's length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A frame is larger than the receiver's (or, sending, the peer's) limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A varint runs past ten bytes, or past 64 bits.
    #[error("varint longer than {MAX_VARINT_LEN} bytes")]
    VarintTooLong,
    /// The connection closed in the middle of a frame.
    #[error("connection closed mid-frame: {received} bytes of {expected:?} received")]
    TruncatedFrame {
        /// Bytes of the frame received.
        received: usize,
        /// The frame's full size, when its length prefix was complete.
        expected: Option<u64>,
    },
    /// A frame ends inside its fixed part or its header fields.
    #[error("truncated frame header: {what} runs past the end of the frame")]
    TruncatedHeader {
        /// The part that was cut short.
        what: &'static str,
    },
    /// A header field's value does not have the shape its tag requires.
    #[error("malformed header field: {what}")]
    MalformedField {
        /// The field.
        what: &'static str,
    },
    /// A metadata key breaks the key rules.
    #[error(transparent)]
    InvalidMetadataKey(#[from] InvalidMetadataKey),
    /// The peer sent more stream data than the credit it was granted.
    #[error("flow-control violation: {what}")]
    FlowControl {
        /// Which window was overrun.
        what: &'static str,
    },
    /// The peer broke a rule of the protocol above the framing (e.g. a request with no
    /// method, or a call id used twice).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
