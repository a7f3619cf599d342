//! Statuses on the wire, in one place: the frame that carries a status (a `RESPONSE` that
//! failed, a server's `STREAM_END`, a `GOAWAY`), the status a received frame carries, and the
//! one table from connection errors to the `GOAWAY` that tells the peer.

use bytes::Bytes;

use super::watchdog::Alarm;
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::wire::{Frame, FrameKind, Header, WireError, flags};

/// A frame of `kind` for call `id` carrying `status`: its code (absent for OK), message and
/// metadata, and the `REFUSED` flag if the status says the call was not processed.
pub(crate) fn status_frame(kind: FrameKind, id: u64, status: Status) -> Frame {
    let refused = status.is_refused();
    let (code, message, metadata) = status.into_parts();
    let mut frame = Frame::new(kind, id);
    if refused {
        frame.flags |= flags::REFUSED;
    }
    if code != Code::Ok {
        frame.header.status_code = Some(code.as_u32());
    }
    if !message.is_empty() {
        frame.header.status_message = Some(Bytes::from(message));
    }
    frame.header.metadata = metadata;
    frame
}

/// The OK end of a stream, carrying the server's response metadata.
pub(crate) fn ok_end(id: u64, metadata: Metadata) -> Frame {
    let mut frame = Frame::new(FrameKind::StreamEnd, id);
    frame.header.metadata = metadata;
    frame
}

/// What a `RESPONSE`, a server's `STREAM_END` or a `GOAWAY` says: `Ok` with the metadata when
/// the status is OK (or absent), else the status with the metadata attached.
pub(crate) fn status_of(header: Header, frame_flags: u8) -> Result<Metadata, Status> {
    let code = header.status_code.map_or(Code::Ok, Code::from_u32);
    if code == Code::Ok {
        return Ok(header.metadata);
    }
    let message = header.status_message.map(|m| String::from_utf8_lossy(&m).into_owned()).unwrap_or_default();
    let status = Status::new(code, message).with_metadata(header.metadata);
    Err(if frame_flags & flags::REFUSED != 0 { status.refused() } else { status })
}

/// The `GOAWAY` that tells a peer why its connection is being closed for `err`, or `None`
/// when it is not to be told anything: it does not speak the protocol, or the byte stream
/// itself failed or was cut. This is the one table, for both sides (see docs/PROTOCOL.md §14).
pub(crate) fn goaway_for(err: &WireError) -> Option<Frame> {
    let code = match err {
        WireError::BadPreface { .. }
        | WireError::TruncatedPreface { .. }
        | WireError::PrefaceTimeout
        | WireError::TruncatedFrame { .. }
        | WireError::Io(_) => return None,
        WireError::UnsupportedVersion(_) => Code::Unimplemented,
        WireError::FrameTooLarge { .. } | WireError::HeaderTooLarge { .. } => Code::ResourceExhausted,
        WireError::VarintTooLong
        | WireError::TruncatedHeader { .. }
        | WireError::MalformedField { .. }
        | WireError::InvalidMetadataKey(_)
        | WireError::FlowControl { .. }
        | WireError::Protocol(_) => Code::Internal,
    };
    Some(status_frame(FrameKind::GoAway, 0, Status::new(code, err.to_string())))
}

/// What a watchdog's alarm means for the calls still on the connection.
pub(crate) fn alarm_status(alarm: Alarm) -> Status {
    match alarm {
        Alarm::Idle(limit) => Status::unavailable(format!("the connection was idle for {limit:?}")),
        Alarm::ReadStall(limit) => {
            Status::unavailable(format!("the peer stopped in the middle of a frame for {limit:?}"))
        }
        Alarm::WriteStall(limit) => {
            Status::unavailable(format!("the peer read nothing of what was sent to it for {limit:?}"))
        }
    }
}

/// The `GOAWAY` that tells a peer why the watchdog closes its connection (one that does not
/// read is told nothing).
pub(crate) fn goaway_for_alarm(alarm: Alarm) -> Option<Frame> {
    match alarm {
        Alarm::WriteStall(_) => None,
        Alarm::Idle(_) | Alarm::ReadStall(_) => Some(status_frame(FrameKind::GoAway, 0, alarm_status(alarm))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_through_its_frame() {
        let mut metadata = Metadata::new();
        metadata.insert("k", "v");
        let status = Status::unavailable("going away").with_metadata(metadata.clone()).refused();
        let frame = status_frame(FrameKind::Response, 7, status);
        let back = status_of(frame.header, frame.flags).expect_err("an error");
        assert_eq!((back.code(), back.message(), back.is_refused()), (Code::Unavailable, "going away", true));
        assert_eq!(back.metadata(), &metadata);
        let ok = ok_end(7, metadata.clone());
        assert_eq!(status_of(ok.header, ok.flags).expect("ok"), metadata);
    }

    #[test]
    fn both_sides_answer_a_broken_rule_with_the_same_code() {
        let code = |err: WireError| goaway_for(&err).and_then(|f| f.header.status_code).map(Code::from_u32);
        assert_eq!(code(WireError::UnsupportedVersion(9)), Some(Code::Unimplemented));
        assert_eq!(code(WireError::FrameTooLarge { len: 9, max: 1 }), Some(Code::ResourceExhausted));
        assert_eq!(code(WireError::Protocol("x")), Some(Code::Internal));
        assert_eq!(code(WireError::BadPreface { found: vec![] }), None);
    }
}
