//! Bad input from one peer gets a clear answer, closes that connection only, and never
//! disturbs the server or its other connections.

use bytes::Bytes;
use rpc_core::internals::wire::{Frame, FrameKind, MAGIC, PREFACE};
use rpc_core::{Channel, Code};
use tokio::io::AsyncWriteExt;

use crate::common::{self, Echo, Running, Sleep, TestClient};
use crate::raw::RawClient;

/// A client connected before the bad input, and one connecting after, both still served.
async fn assert_still_serving(server: &Running, before: &TestClient) {
    let reply = before.echo(Echo { payload: Bytes::from_static(b"before") }).await.expect("old connection");
    assert_eq!(reply.payload.as_ref(), b"before");
    let after = TestClient::new(Channel::connect(server.addr).await.expect("new connection"));
    let reply =
        after.echo(Echo { payload: Bytes::from_static(b"after") }).await.expect("new connection call");
    assert_eq!(reply.payload.as_ref(), b"after");
}

async fn setup() -> (Running, TestClient) {
    let server = common::serve().await;
    let before = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    before.echo(Echo::default()).await.expect("warm up");
    (server, before)
}

/// Sends `bytes` after a valid preface; returns the GOAWAY the server answers with, after
/// checking that it then closes the connection.
async fn goaway_for(server: &Running, bytes: &[u8]) -> Frame {
    let mut raw = RawClient::connect(server.addr).await;
    raw.send_bytes(bytes).await;
    let frames = raw.until_closed().await;
    frames
        .into_iter()
        .find(|f| f.kind == FrameKind::GoAway)
        .expect("a GOAWAY explains why the connection was closed")
}

fn message(frame: &Frame) -> String {
    String::from_utf8_lossy(frame.header.status_message.as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn wrong_preface_closes_that_connection_and_nothing_else() {
    let (server, before) = setup().await;
    let mut raw = RawClient::connect_bare(server.addr).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = raw.raw_until_closed().await;
    // At most the server's own preface and settings, written at accept: never a GOAWAY,
    // since a peer with the wrong magic cannot read one.
    assert!(answer.is_empty() || answer.starts_with(&MAGIC), "{answer:02x?}");
    // Preface, settings and a window update are under 64 bytes.
    assert!(answer.len() <= PREFACE.len() + 64, "the server sent more than its preface: {answer:02x?}");
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unsupported_version_gets_goaway_unimplemented() {
    let (server, before) = setup().await;
    let mut raw = RawClient::connect_bare(server.addr).await;
    let mut preface = PREFACE;
    preface[6] = 2;
    raw.send_bytes(&preface).await;
    let goaway = raw.until_closed().await.into_iter().find(|f| f.kind == FrameKind::GoAway).expect("goaway");
    assert_eq!(goaway.header.status_code, Some(Code::Unimplemented as u32));
    assert!(message(&goaway).contains("version 2"), "{}", message(&goaway));
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_length_prefix_gets_goaway_resource_exhausted() {
    let (server, before) = setup().await;
    // A length prefix of 1 GiB, and then nothing: the server must not wait for the body.
    let goaway = goaway_for(&server, &[0x80, 0x80, 0x80, 0x80, 0x04]).await;
    assert_eq!(goaway.header.status_code, Some(Code::ResourceExhausted as u32));
    assert!(message(&goaway).contains("exceeds the limit of 4194304"), "{}", message(&goaway));
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn varint_longer_than_ten_bytes_gets_goaway_internal() {
    let (server, before) = setup().await;
    let goaway = goaway_for(&server, &[0xff; 11]).await;
    assert_eq!(goaway.header.status_code, Some(Code::Internal as u32));
    assert!(message(&goaway).contains("varint"), "{}", message(&goaway));
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn header_over_the_limit_gets_goaway_resource_exhausted() {
    let (server, before) = setup().await;
    // REQUEST call 1 announcing a 1 MiB header (varint 80 80 40), over the 16 KiB default.
    let goaway = goaway_for(&server, &[0x07, 0x02, 0x00, 0x01, 0x80, 0x80, 0x40, 0x00]).await;
    assert_eq!(goaway.header.status_code, Some(Code::ResourceExhausted as u32));
    assert!(
        message(&goaway).contains("header of 1048576 bytes exceeds the limit of 16384"),
        "{}",
        message(&goaway)
    );
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_tells_a_server_that_breaks_the_protocol_why_it_leaves() {
    // A "server" that sends a REQUEST, which only clients may send.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fake = tokio::spawn(async move {
        let mut raw = RawClient::accept(&listener).await;
        let mut request = Frame::new(FrameKind::Request, 1);
        request.header.method = Some(Bytes::from_static(b"/x.Y/Z"));
        raw.send(&request).await;
        raw.until_closed().await
    });
    let client = TestClient::new(Channel::builder(addr).connect_lazy());
    let status = client.echo(Echo::default()).await.expect_err("the connection is broken");
    assert_eq!(status.code(), Code::Internal, "{status}");
    let seen = fake.await.expect("fake server");
    let goaway = seen.iter().find(|f| f.kind == FrameKind::GoAway).expect("the client sent a GOAWAY");
    assert_eq!(goaway.header.status_code, Some(Code::Internal as u32));
    assert!(message(goaway).contains("protocol violation"), "{}", message(goaway));
}

#[tokio::test]
async fn truncated_header_gets_goaway_internal() {
    let (server, before) = setup().await;
    // Length 4: REQUEST, flags 0, call id 1, header_len 9, and no header bytes.
    let goaway = goaway_for(&server, &[0x04, 0x02, 0x00, 0x01, 0x09]).await;
    assert_eq!(goaway.header.status_code, Some(Code::Internal as u32));
    assert!(message(&goaway).contains("truncated"), "{}", message(&goaway));
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_metadata_key_gets_goaway_internal() {
    let (server, before) = setup().await;
    // REQUEST call 1, header: METADATA { key_len 1, key "K", value "v" }.
    let goaway = goaway_for(&server, &[0x09, 0x02, 0x00, 0x01, 0x05, 0x05, 0x03, 0x01, b'K', b'v']).await;
    assert_eq!(goaway.header.status_code, Some(Code::Internal as u32));
    assert!(message(&goaway).contains("metadata key"), "{}", message(&goaway));
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn truncated_frame_at_close_ends_only_that_connection() {
    let (server, before) = setup().await;
    let mut raw = RawClient::connect(server.addr).await;
    // Announces 100 bytes, sends 3, then closes its side.
    raw.send_bytes(&[100, 0x02, 0x00, 0x01]).await;
    raw.stream.shutdown().await.expect("shutdown");
    let frames = raw.until_closed().await;
    assert!(frames.iter().all(|f| f.kind != FrameKind::Response), "{frames:?}");
    assert_still_serving(&server, &before).await;
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn request_without_method_or_with_call_id_zero_is_a_protocol_violation() {
    let (server, before) = setup().await;
    let mut no_method = Frame::new(FrameKind::Request, 1);
    no_method.body = Bytes::from_static(b"");
    let mut call_zero = Frame::new(FrameKind::Request, 0);
    call_zero.header.method = Some(Bytes::from_static(b"/test.v1.Test/Echo"));
    for (frame, why) in [(no_method, "without a method"), (call_zero, "call id 0")] {
        let mut raw = RawClient::connect(server.addr).await;
        raw.send(&frame).await;
        let goaway =
            raw.until_closed().await.into_iter().find(|f| f.kind == FrameKind::GoAway).expect("goaway");
        assert_eq!(goaway.header.status_code, Some(Code::Internal as u32));
        assert!(message(&goaway).contains(why), "{}", message(&goaway));
    }
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}

#[tokio::test]
async fn reusing_the_id_of_a_call_in_flight_is_a_protocol_violation() {
    // (§7: each call's id is greater than every earlier one, so a reused id is always caught.)
    let (server, before) = setup().await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut slow = Frame::new(FrameKind::Request, 7);
    slow.header.method = Some(Bytes::from_static(b"/test.v1.Test/Sleep"));
    slow.body = prost::Message::encode_to_vec(&Sleep { id: 7, millis: 30_000 }).into();
    raw.send(&slow).await;
    common::eventually("the first call is running", || {
        server.probe.started.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    raw.send(&slow).await;
    let goaway = raw.until_closed().await.into_iter().find(|f| f.kind == FrameKind::GoAway).expect("goaway");
    assert!(message(&goaway).contains("not greater"), "{}", message(&goaway));
    // The first call's handler died with its connection.
    common::eventually("the handler is abandoned", || server.probe.abandoned() == 1).await;
    assert_still_serving(&server, &before).await;
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_frame_kinds_and_header_tags_are_skipped() {
    let (server, before) = setup().await;
    let mut raw = RawClient::connect(server.addr).await;
    // Kind 0x42 with a body: skipped whole.
    raw.send_bytes(&[0x06, 0x42, 0x00, 0x00, 0x00, 0xde, 0xad]).await;
    // A request with an unknown tag 99 before its method.
    let mut header = vec![0x63, 0x02, 0xaa, 0xbb];
    header.extend_from_slice(&[0x01, 18]);
    header.extend_from_slice(b"/test.v1.Test/Echo");
    let body = [0x0a, 0x02, b'h', b'i'];
    let mut payload = vec![0x02, 0x00, 0x05, header.len() as u8];
    payload.extend_from_slice(&header);
    payload.extend_from_slice(&body);
    let mut frame = vec![payload.len() as u8];
    frame.extend_from_slice(&payload);
    raw.send_bytes(&frame).await;
    let response = raw.next_of(FrameKind::Response).await;
    assert_eq!(response.call_id, 5);
    assert_eq!(response.header.status_code, None);
    assert_eq!(response.body.as_ref(), &body[..]);
    assert_still_serving(&server, &before).await;
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn ping_is_answered_with_a_pong_echoing_the_body() {
    let (server, _before) = setup().await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut ping = Frame::new(FrameKind::Ping, 0);
    ping.body = Bytes::from_static(b"12345678");
    raw.send(&ping).await;
    let pong = raw.next_of(FrameKind::Pong).await;
    assert_eq!(pong.body.as_ref(), b"12345678");
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn random_garbage_never_takes_the_server_down() {
    let (server, before) = setup().await;
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..200 {
        let mut raw = RawClient::connect(server.addr).await;
        let len = rng.usize(1..256);
        let garbage: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        raw.send_bytes(&garbage).await;
        // Either the server closes the connection, or the garbage happened to be a valid
        // prefix and it waits for more; closing our side ends it either way.
        let _ = raw.stream.shutdown().await;
        let _ = raw.raw_until_closed().await;
    }
    assert_still_serving(&server, &before).await;
    server.shutdown().await;
}
