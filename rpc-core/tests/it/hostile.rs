//! Peers that are slow, silent or patient: every connection that holds the server's
//! resources without using them is closed by a documented timeout, and told why where it
//! still reads (docs/PROTOCOL.md §12). The timeouts here are short so that the tests wait
//! little; each test waits for the event (a frame, a close), never for a time.

use std::time::Duration;

use bytes::Bytes;
use rpc_core::wire::{Frame, FrameKind, PREFACE};
use rpc_core::{Channel, Code};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::common::{self, ConnEvent, Echo, TestClient};
use crate::raw::RawClient;
use crate::streams::{CountRequest, StreamsServer};

const SHORT: Duration = Duration::from_millis(200);

/// The status a frame carries: code and message.
fn status(frame: &Frame) -> (Code, String) {
    let code = Code::from_u32(frame.header.status_code.unwrap_or(0));
    let message =
        String::from_utf8_lossy(frame.header.status_message.as_deref().unwrap_or_default()).into_owned();
    (code, message)
}

#[tokio::test]
async fn an_idle_connection_is_told_to_go_away_then_closed() {
    let (server, mut events) = common::serve_tracked(|b| b.idle_timeout(Some(SHORT))).await;
    let mut raw = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    // A keepalive ping the client answers is not a call: the connection is still idle.
    let goaway = raw.next_of(FrameKind::GoAway).await;
    let (code, message) = status(&goaway);
    assert_eq!(code, Code::Unavailable);
    assert!(message.contains("idle"), "{message}");
    // The drain ping follows; a client that never answers it is closed after the grace.
    let ping = raw.next_of(FrameKind::Ping).await;
    assert_eq!(ping.body.as_ref(), b"draining");
    raw.until_closed().await;
    events.expect(ConnEvent::Closed).await;
}

#[tokio::test]
async fn a_client_answering_the_idle_goaway_leaves_and_its_next_call_reconnects() {
    let (server, mut events) = common::serve_tracked(|b| b.idle_timeout(Some(SHORT))).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let echo = Echo { payload: Bytes::from_static(b"one") };
    assert_eq!(client.echo(echo.clone()).await.expect("first call"), echo);
    events.expect(ConnEvent::Accepted).await;
    // Idle now: the server's GOAWAY and the client's answer to its ping close it.
    events.expect(ConnEvent::Closed).await;
    assert_eq!(client.echo(echo.clone()).await.expect("after the idle close"), echo);
    events.expect(ConnEvent::Accepted).await;
}

#[tokio::test]
async fn a_call_in_flight_keeps_a_connection_from_being_idle() {
    let (server, mut events) =
        common::serve_tracked(|b| b.idle_timeout(Some(Duration::from_millis(50)))).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    // Ten idle timeouts long: were it idle, the call would be cut off.
    let slept = client.sleep(common::Sleep { id: 1, millis: 500 }).await.expect("the call completes");
    assert_eq!(slept.id, 1);
    events.expect(ConnEvent::Accepted).await;
}

#[tokio::test]
async fn a_client_that_stops_mid_frame_is_disconnected_with_the_reason() {
    let (server, mut events) =
        common::serve_tracked(|b| b.read_stall_timeout(Some(SHORT)).idle_timeout(None)).await;
    let mut raw = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    // The length prefix says 100 bytes; ten come.
    raw.send_bytes(&[100, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]).await;
    let frames = raw.until_closed().await;
    let goaway = frames.iter().find(|f| f.kind == FrameKind::GoAway).expect("a GOAWAY");
    let (code, message) = status(goaway);
    assert_eq!(code, Code::Unavailable);
    assert!(message.contains("middle of a frame"), "{message}");
    events.expect(ConnEvent::Closed).await;
}

#[tokio::test]
async fn a_client_trickling_a_frame_in_is_disconnected_all_the_same() {
    let (server, mut events) =
        common::serve_tracked(|b| b.read_stall_timeout(Some(SHORT)).idle_timeout(None)).await;
    let mut raw = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    raw.send_bytes(&[0x80, 0x01]).await; // A 128-byte frame begins.
    let trickle = async {
        // A byte at a time, each a fifth of the timeout apart: progress, but never a frame.
        for _ in 0..200 {
            tokio::time::sleep(SHORT / 5).await;
            if tokio::io::AsyncWriteExt::write_all(&mut raw.stream, &[0]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = trickle => panic!("the server let a frame take 40 read-stall timeouts"),
        event = events.next() => assert_eq!(event, ConnEvent::Closed),
    }
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected() {
    let (server, mut events) = common::serve_tracked(|b| {
        b.add_service(StreamsServer::new(crate::streams::StreamService::default()))
            .write_stall_timeout(Some(SHORT))
            .idle_timeout(None)
    })
    .await;
    let mut raw = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    // A server stream far larger than the socket buffers, and the client reads none of it.
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Count"));
    raw.send(&open).await;
    let request = CountRequest { count: 1_000_000, size: 1000, ..Default::default() };
    let mut message = Frame::new(FrameKind::StreamMessage, 1);
    message.body = prost::Message::encode_to_vec(&request).into();
    raw.send(&message).await;
    // A window far beyond the socket buffers, so that only the client's not reading stops the server.
    let mut update = Frame::new(FrameKind::WindowUpdate, 1);
    update.header.window_increment = Some(1 << 40);
    raw.send(&update).await;
    update.call_id = 0;
    raw.send(&update).await;
    raw.send(&Frame::new(FrameKind::StreamEnd, 1)).await;
    events.expect(ConnEvent::Closed).await;
}

#[tokio::test]
async fn a_server_stream_whose_request_never_completes_ends_at_the_request_timeout() {
    let (server, _events) = common::serve_tracked(|b| {
        b.add_service(StreamsServer::new(crate::streams::StreamService::default())).request_timeout(SHORT)
    })
    .await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Count"));
    raw.send(&open).await;
    // No request message, no STREAM_END: the handler never starts.
    let end = raw.next_of(FrameKind::StreamEnd).await;
    let (code, message) = status(&end);
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(message.contains("did not arrive"), "{message}");
}

#[tokio::test]
async fn a_client_that_does_not_answer_keepalive_pings_is_disconnected() {
    let (server, mut events) = common::serve_tracked(|b| {
        b.keepalive_interval(Some(Duration::from_millis(100))).keepalive_timeout(SHORT).idle_timeout(None)
    })
    .await;
    let mut raw = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    let ping = raw.next_of(FrameKind::Ping).await;
    assert_eq!(ping.body.as_ref(), b"keepaliv");
    // Not answered.
    raw.until_closed().await;
    events.expect(ConnEvent::Closed).await;
}

/// A server that answers with its preface and settings, then begins a frame and stops.
async fn stalling_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut preface = [0u8; 8];
        socket.read_exact(&mut preface).await.expect("the client's preface");
        let mut out = PREFACE.to_vec();
        out.extend_from_slice(&[100, 1, 0, 1]); // A 100-byte frame begins, and no more comes.
        tokio::io::AsyncWriteExt::write_all(&mut socket, &out).await.expect("write");
        // Hold the socket open, reading what the client sends, until it closes.
        let mut sink = Vec::new();
        let _ = socket.read_to_end(&mut sink).await;
    });
    addr
}

#[tokio::test]
async fn a_client_disconnects_from_a_server_that_stops_mid_frame() {
    let addr = stalling_server().await;
    let channel = Channel::builder(addr).read_stall_timeout(Some(SHORT)).connect_lazy();
    let client = TestClient::new(channel);
    let err = client.echo(Echo::default()).await.expect_err("the connection is cut");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("middle of a frame"), "{}", err.message());
}

#[tokio::test]
async fn an_idle_client_connection_closes_and_the_next_call_opens_another() {
    let (server, mut events) = common::serve_tracked(|b| b.idle_timeout(None)).await;
    let channel = Channel::builder(server.addr).idle_timeout(Some(SHORT)).connect_lazy();
    let client = TestClient::new(channel);
    client.echo(Echo::default()).await.expect("first call");
    events.expect(ConnEvent::Accepted).await;
    events.expect(ConnEvent::Closed).await;
    client.echo(Echo::default()).await.expect("second call");
    events.expect(ConnEvent::Accepted).await;
}

#[tokio::test]
async fn at_the_connection_limit_the_server_accepts_no_more_until_one_closes() {
    let (server, mut events) = common::serve_tracked(|b| b.max_connections(2)).await;
    let first = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    let _second = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    // The third waits in the listener's backlog: connected, not accepted.
    let mut third = RawClient::connect(server.addr).await;
    drop(first);
    events.expect(ConnEvent::Closed).await;
    events.expect(ConnEvent::Accepted).await;
    // Served once there is room.
    third.next_of(FrameKind::Settings).await;
}

#[tokio::test]
async fn a_connection_over_the_limit_per_address_is_told_why() {
    let (server, mut events) = common::serve_tracked(|b| b.max_connections_per_peer(Some(1))).await;
    let _first = RawClient::connect(server.addr).await;
    events.expect(ConnEvent::Accepted).await;
    let mut second = RawClient::connect(server.addr).await;
    let frames = second.until_closed().await;
    let goaway = frames.iter().find(|f| f.kind == FrameKind::GoAway).expect("a GOAWAY");
    let (code, message) = status(goaway);
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("too many connections"), "{message}");
    // The client's view: the call fails with the reason.
    let client = TestClient::new(Channel::builder(server.addr).connect_lazy());
    let err = client.echo(Echo::default()).await.expect_err("refused");
    assert!(err.message().contains("too many connections"), "{}", err.message());
}
