//! The golden vectors of docs/PROTOCOL.md, read from the document itself: each decodes to the
//! frame it describes and that frame encodes back to the same bytes.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpc_core::Metadata;
use rpc_core::internals::wire::{Frame, FrameCodec, FrameKind, PREFACE, flags};
use tokio_util::codec::{Decoder, Encoder};

const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// Every `<!-- golden: name -->` block followed by a ```hex fence, as bytes.
fn golden_vectors() -> BTreeMap<String, Vec<u8>> {
    let mut vectors = BTreeMap::new();
    let mut rest = PROTOCOL_MD;
    while let Some(start) = rest.find("<!-- golden: ") {
        rest = &rest[start + "<!-- golden: ".len()..];
        let end = rest.find(" -->").expect("marker closes");
        let name = rest[..end].to_owned();
        let fence = rest.find("```hex\n").expect("hex block follows the marker") + "```hex\n".len();
        let body = &rest[fence..];
        let close = body.find("```").expect("hex block closes");
        let bytes = body[..close]
            .split_whitespace()
            .map(|pair| u8::from_str_radix(pair, 16).expect("hex pair"))
            .collect();
        assert!(vectors.insert(name.clone(), bytes).is_none(), "duplicate vector {name}");
        rest = &body[close..];
    }
    vectors
}

fn frame(kind: FrameKind, call_id: u64) -> Frame {
    Frame::new(kind, call_id)
}

/// The frames the document describes, built from their fields.
fn expected_frames() -> BTreeMap<&'static str, Frame> {
    let mut settings = frame(FrameKind::Settings, 0);
    settings.header.max_frame_size = Some(4_194_304);
    settings.header.max_concurrent_calls = Some(1024);
    settings.header.initial_window = Some(1_048_576);
    settings.header.max_header_size = Some(16_384);
    settings.header.stream_accepts = Some(1);

    let mut request = frame(FrameKind::Request, 1);
    request.header.method = Some(Bytes::from_static(b"/helloworld.Greeter/SayHello"));
    request.header.timeout = Some(Duration::from_millis(1500));
    request.header.metadata = Metadata::from_iter([("x-request-id", "42")]);
    request.body = Bytes::from_static(b"\x0a\x05world");

    let mut response = frame(FrameKind::Response, 1);
    response.header.metadata = Metadata::from_iter([("x-greeter", "friendly")]);
    response.body = Bytes::from_static(b"\x0a\x0dHello, world!");

    let mut error = frame(FrameKind::Response, 2);
    error.header.status_code = Some(3);
    error.header.status_message = Some(Bytes::from_static(b"name must not be empty"));

    let mut refused = frame(FrameKind::Response, 9);
    refused.flags = flags::REFUSED;
    refused.header.status_code = Some(14);
    refused.header.status_message = Some(Bytes::from_static(b"server is shutting down"));

    let cancel = frame(FrameKind::Cancel, 2);

    let mut ping = frame(FrameKind::Ping, 0);
    ping.body = Bytes::from_static(b"keepaliv");

    let mut goaway = frame(FrameKind::GoAway, 0);
    goaway.header.status_code = Some(14);
    goaway.header.status_message = Some(Bytes::from_static(b"server is shutting down"));

    let mut stream_open = frame(FrameKind::StreamOpen, 3);
    stream_open.header.method = Some(Bytes::from_static(b"/routeguide.RouteGuide/RouteChat"));
    stream_open.header.timeout = Some(Duration::from_secs(10));

    let stream_accept = frame(FrameKind::StreamAccept, 3);

    let mut stream_message = frame(FrameKind::StreamMessage, 3);
    stream_message.body = Bytes::from_static(b"\x12\x02hi");

    let half_close = frame(FrameKind::StreamEnd, 3);

    let mut window_update = frame(FrameKind::WindowUpdate, 3);
    window_update.header.window_increment = Some(524_288);

    let mut connection_window = frame(FrameKind::WindowUpdate, 0);
    connection_window.header.window_increment = Some(15 * 1024 * 1024);

    let mut stream_end = frame(FrameKind::StreamEnd, 3);
    stream_end.header.metadata = Metadata::from_iter([("x-count", "2")]);

    BTreeMap::from([
        ("settings", settings),
        ("stream_open", stream_open),
        ("stream_accept", stream_accept),
        ("stream_message", stream_message),
        ("half_close", half_close),
        ("window_update", window_update),
        ("connection_window", connection_window),
        ("stream_end", stream_end),
        ("request", request),
        ("response", response),
        ("error", error),
        ("refused", refused),
        ("cancel", cancel),
        ("ping", ping),
        ("goaway", goaway),
    ])
}

#[test]
fn the_document_has_the_preface_and_at_least_three_golden_frames() {
    let vectors = golden_vectors();
    assert!(vectors.contains_key("preface"));
    assert!(vectors.len() >= 4, "found {:?}", vectors.keys());
}

#[test]
fn a_stream_message_costs_its_length_prefix() {
    // PROTOCOL.md §15.10: the example message costs 8 bytes of credit, its `length`.
    let vectors = golden_vectors();
    let bytes = &vectors["stream_message"];
    let frame = FrameCodec::new().decode(&mut BytesMut::from(&bytes[..])).expect("ok").expect("frame");
    assert_eq!(frame.payload_len(), 8);
    assert_eq!(bytes[0], 8);
}

#[test]
fn golden_preface_matches_the_constant() {
    assert_eq!(golden_vectors()["preface"], PREFACE);
}

#[test]
fn golden_frames_decode_to_their_description_and_encode_back_byte_for_byte() {
    let vectors = golden_vectors();
    let expected = expected_frames();
    for (name, bytes) in &vectors {
        if name == "preface" {
            continue;
        }
        let want =
            expected.get(name.as_str()).unwrap_or_else(|| panic!("no expectation for golden vector {name}"));

        let mut buf = BytesMut::from(&bytes[..]);
        let decoded = FrameCodec::new().decode(&mut buf).expect("decodes").expect("complete frame");
        assert!(buf.is_empty(), "{name}: bytes left over after the frame");
        assert_eq!(&decoded, want, "{name}: decoded fields");

        let mut out = BytesMut::new();
        FrameCodec::new().encode(want, &mut out).expect("encodes");
        assert_eq!(out.as_ref(), &bytes[..], "{name}: encoding");
    }
    for name in expected.keys() {
        assert!(vectors.contains_key(*name), "vector {name} is missing from PROTOCOL.md");
    }
}

#[test]
fn golden_stream_decodes_after_a_preface_in_any_split() {
    // The preface followed by every golden frame, cut at every possible point.
    let vectors = golden_vectors();
    let mut stream = vectors["preface"].clone();
    let mut count = 0;
    for (name, bytes) in &vectors {
        if name != "preface" {
            stream.extend_from_slice(bytes);
            count += 1;
        }
    }
    for cut in 0..stream.len() {
        let mut codec = FrameCodec::new().expect_preface();
        let mut buf = BytesMut::from(&stream[..cut]);
        let mut frames = 0;
        while codec.decode(&mut buf).expect("valid prefix").is_some() {
            frames += 1;
        }
        buf.extend_from_slice(&stream[cut..]);
        while codec.decode(&mut buf).expect("valid stream").is_some() {
            frames += 1;
        }
        assert_eq!(frames, count, "cut at {cut}");
    }
}
