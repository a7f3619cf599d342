//! Entry points for the fuzz targets in `rpc-core/fuzz`: the decoder and the header parser,
//! driven with arbitrary bytes, checking the invariants a well-formed result must keep. Built
//! only with the `fuzzing` feature; not part of the API.

// A broken invariant must stop the fuzzer where it is found.
#![allow(clippy::expect_used, clippy::panic)]

use bytes::{Bytes, BytesMut};

use crate::wire::{Frame, FrameCodec, Incoming, StreamMessages};

/// Feeds `data` to the one decoder a piece at a time (the first byte chooses the piece size,
/// whether stream messages come as runs, and whether a preface is expected), and checks each
/// result: a frame encodes back to one that decodes to it, and a run of stream messages reads
/// out whole, at the credit it was counted at.
pub fn decode_stream(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else { return };
    let piece = usize::from(control & 0x3f) + 1;
    let run = if control & 0x40 != 0 { 32 * 1024 } else { 0 };
    let mut codec = FrameCodec::new().with_max_frame_size(64 * 1024).with_max_header_size(4096);
    if control & 0x80 != 0 {
        codec = codec.expect_preface();
    }
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(piece) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode_incoming(&mut buf, run) {
                Ok(Some(Incoming::Frame(frame))) => check_round_trip(&frame),
                Ok(Some(Incoming::Messages(messages))) => check_run(messages),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_incoming_eof(&mut buf);
}

/// Parses `data` as a frame's payload (what follows the length prefix), and checks that a
/// frame it parses to encodes back to one that parses to the same.
pub fn parse_payload(data: &[u8]) {
    if let Ok(Some(frame)) = Frame::decode_payload(Bytes::copy_from_slice(data), 4096) {
        check_round_trip(&frame);
    }
}

fn check_round_trip(frame: &Frame) {
    let mut out = BytesMut::new();
    frame.encode_unchecked(&mut out);
    let mut codec = FrameCodec::new().with_max_frame_size(usize::MAX).with_max_header_size(usize::MAX);
    let again = codec.decode_incoming(&mut out, 0);
    let again = match again {
        Ok(Some(Incoming::Frame(again))) => again,
        Ok(Some(Incoming::Messages(mut messages))) => {
            // A plain stream message comes back the fast way: compare what it carries.
            let (body, _) = messages.next_message().expect("one message");
            assert_eq!(
                (frame.call_id, &frame.body),
                (messages.call_id, &body),
                "a message changed in a round trip"
            );
            return;
        }
        other => panic!("a decoded frame did not decode again: {other:?}"),
    };
    assert_eq!(&again, frame, "a frame changed in a round trip");
    assert!(out.is_empty(), "bytes left over after a round trip");
}

fn check_run(mut messages: StreamMessages) {
    let (count, cost) = (messages.count, messages.cost);
    let (mut taken, mut spent) = (0, 0);
    while let Some((_, credit)) = messages.next_message() {
        taken += 1;
        spent += credit;
    }
    assert!(messages.is_empty(), "a run left bytes behind");
    assert_eq!((taken, spent), (count, cost), "a run read out differently from how it was counted");
}
