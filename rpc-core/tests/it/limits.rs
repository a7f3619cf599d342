//! Every limit, at its boundary, over a real socket.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use rpc_core::internals::wire::{Frame, FrameKind};
use rpc_core::{Channel, Code};
use tokio::net::TcpListener;

use crate::common::{self, Echo, Size, Sleep, TestClient};
use crate::raw::RawClient;

/// Echo's encoding adds a tag byte and a varint length to the payload; the request frame
/// adds kind, flags, call id, header length and the method field.
fn echo_frame_payload(payload: usize, call_id: u64) -> usize {
    let varint = |n: u64| ((64 - (n | 1).leading_zeros()) as usize).div_ceil(7);
    let body = 1 + varint(payload as u64) + payload;
    let method = "/test.v1.Test/Echo".len();
    let header = 1 + 1 + method;
    2 + varint(call_id) + varint(header as u64) + header + body
}

#[tokio::test]
async fn request_at_the_servers_frame_limit_passes_and_one_byte_over_is_refused_locally() {
    const LIMIT: usize = 64 * 1024;
    let server = common::serve_with(|b| b.max_frame_size(LIMIT)).await;
    // The client accepts larger frames, so only the server's announced limit applies.
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("settings exchanged");

    // Call ids so far: 1. The next two calls are ids 2 and 3 (both one varint byte).
    let fits = (1..LIMIT).rev().find(|&n| echo_frame_payload(n, 2) <= LIMIT).expect("a size that fits");
    assert_eq!(echo_frame_payload(fits, 2), LIMIT, "the test must probe the exact boundary");
    let reply = client.echo(Echo { payload: Bytes::from(vec![1; fits]) }).await;
    // The response is the same size, and the client's limit is the 4 MiB default.
    assert_eq!(reply.expect("at the limit").payload.len(), fits);

    let status = client.echo(Echo { payload: Bytes::from(vec![1; fits + 1]) }).await.expect_err("over");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("exceeds the server's limit"), "{status}");

    // Refused locally: the connection is intact.
    client.echo(Echo::default()).await.expect("still connected");
    server.shutdown().await;
}

#[tokio::test]
async fn response_over_the_clients_frame_limit_is_resource_exhausted() {
    let server = common::serve().await;
    let channel = Channel::builder(server.addr).max_frame_size(16 * 1024).connect().await.expect("connect");
    let client = TestClient::new(channel);
    let reply = client.big(Size { bytes: 8 * 1024 }).await.expect("under the limit");
    assert_eq!(reply.payload.len(), 8 * 1024);
    let status = client.big(Size { bytes: 64 * 1024 }).await.expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("client's limit of 16384"), "{status}");
    client.echo(Echo::default()).await.expect("connection intact");
    server.shutdown().await;
}

/// A request frame for `method` with `body`.
fn request(id: u64, method: &'static str, body: impl prost::Message) -> Frame {
    let mut frame = Frame::new(FrameKind::Request, id);
    frame.header.method = Some(Bytes::from_static(method.as_bytes()));
    frame.body = body.encode_to_vec().into();
    frame
}

/// The server's side of the limit: a client that does not honour it has its calls refused,
/// marked as not processed.
#[tokio::test]
async fn calls_past_max_concurrent_calls_are_refused() {
    const LIMIT: u64 = 4;
    let server = common::serve_with(|b| b.max_concurrent_calls(LIMIT as usize)).await;
    let mut raw = RawClient::connect(server.addr).await;
    for id in 1..=LIMIT {
        raw.send(&request(id, "/test.v1.Test/Sleep", Sleep { id, millis: 30_000 })).await;
    }
    common::eventually("the limit is reached", || {
        server.probe.started.load(Ordering::SeqCst) == LIMIT as usize
    })
    .await;
    raw.send(&request(100, "/test.v1.Test/Echo", Echo::default())).await;
    let refused = raw.next_of(FrameKind::Response).await;
    assert_eq!(refused.call_id, 100);
    assert_eq!(refused.header.status_code, Some(Code::ResourceExhausted as u32));
    assert_eq!(
        refused.flags & rpc_core::internals::wire::flags::REFUSED,
        rpc_core::internals::wire::flags::REFUSED,
        "not processed"
    );
    let message =
        String::from_utf8_lossy(refused.header.status_message.as_deref().unwrap_or_default()).into_owned();
    assert!(message.contains("over 4 calls"), "{message}");
    // Once the held calls are cancelled, there is room again.
    for id in 1..=LIMIT {
        raw.send(&Frame::new(FrameKind::Cancel, id)).await;
    }
    common::eventually("the held calls are abandoned", || server.probe.abandoned() == LIMIT as usize).await;
    raw.send(&request(101, "/test.v1.Test/Echo", Echo::default())).await;
    let answered = raw.next_of(FrameKind::Response).await;
    assert_eq!((answered.call_id, answered.header.status_code), (101, None));
    drop(raw);
    server.shutdown().await;
}

/// The client's side: it honours the limit the server announced, so a call over it waits for
/// a slot (up to its deadline, failing with `DEADLINE_EXCEEDED` unsent) instead of being
/// refused, and goes as soon as a slot frees up.
#[tokio::test]
async fn a_client_waits_for_a_slot_under_the_servers_limit() {
    const LIMIT: usize = 4;
    let server = common::serve_with(|b| b.max_concurrent_calls(LIMIT)).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("settings exchanged");
    let mut held = Vec::new();
    for id in 0..LIMIT as u64 {
        let client = client.clone();
        held.push(tokio::spawn(async move { client.sleep(Sleep { id, millis: 30_000 }).await }));
    }
    common::eventually("the limit is reached", || server.probe.started.load(Ordering::SeqCst) == LIMIT).await;
    let status = client
        .echo(Echo::default())
        .timeout(Duration::from_millis(200))
        .await
        .expect_err("no slot within the deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
    assert!(status.message().contains("before the call could be sent"), "{status}");
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.echo(Echo::default()).await })
    };
    held.remove(0).abort();
    let echoed = tokio::time::timeout(Duration::from_secs(10), waiting).await.expect("a slot freed up");
    echoed.expect("task").expect("the waiting call went");
    assert_eq!(server.probe.started.load(Ordering::SeqCst), LIMIT, "nothing else ran: the calls waited");
    for call in &held {
        call.abort();
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_its_responses_stops_being_read_from() {
    const CALLS: u64 = 100;
    const RESPONSE: u64 = 1024 * 1024;
    let server = common::serve().await;
    let mut raw = RawClient::connect(server.addr).await;
    for id in 1..=CALLS {
        let mut request = Frame::new(FrameKind::Request, id);
        request.header.method = Some(Bytes::from_static(b"/test.v1.Test/Big"));
        request.body = prost::Message::encode_to_vec(&Size { bytes: RESPONSE }).into();
        raw.send(&request).await;
        // Paced, so answers are owed before the next request arrives (a burst arriving in
        // one read is taken whole: the mark bounds new work once output backs up).
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // 100 MiB of answers are owed, and the client reads none: the server takes on only as
    // much as its buffers and the socket's hold, then stops reading requests.
    let taken = server.probe.started.load(Ordering::SeqCst);
    assert!(
        taken < CALLS as usize / 2,
        "the server took {taken} of {CALLS} calls without the client reading"
    );

    // Once the client reads, every call is served.
    let mut answered = 0;
    while answered < CALLS {
        let response = raw.next_of(FrameKind::Response).await;
        assert_eq!(response.header.status_code, None);
        answered += 1;
    }
    drop(raw);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_concurrency_limit_is_refused_and_every_call_is_answered() {
    const LIMIT: usize = 8;
    const CALLS: u64 = 100;
    let server = common::serve_with(|b| b.max_concurrent_calls(LIMIT)).await;
    let mut raw = RawClient::connect(server.addr).await;
    // All requests in one write, each for a handler that waits (and so holds its slot).
    let mut burst = Vec::new();
    for id in 1..=CALLS {
        let mut request = Frame::new(FrameKind::Request, id);
        request.header.method = Some(Bytes::from_static(b"/test.v1.Test/Sleep"));
        request.body = prost::Message::encode_to_vec(&common::Sleep { id, millis: 300 }).into();
        let mut buf = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut rpc_core::internals::wire::FrameCodec::new(),
            &request,
            &mut buf,
        )
        .expect("encode");
        burst.extend_from_slice(&buf);
    }
    raw.send_bytes(&burst).await;

    // Every call is answered: the first LIMIT served, the rest refused as not processed.
    let (mut answered, mut refused) = (0, 0);
    while answered + refused < CALLS {
        let response = raw.next_of(FrameKind::Response).await;
        match response.header.status_code {
            None => answered += 1,
            Some(code) => {
                assert_eq!(code, Code::ResourceExhausted as u32);
                assert_ne!(response.flags & rpc_core::internals::wire::flags::REFUSED, 0);
                refused += 1;
            }
        }
    }
    assert_eq!(answered, LIMIT as u64);
    assert_eq!(server.probe.started.load(Ordering::SeqCst), LIMIT, "refused calls never ran");
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_over_the_servers_header_limit_fails_the_call_locally() {
    let server = common::serve_with(|b| b.max_header_size(1024)).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("settings exchanged");
    let status = client
        .echo(Echo::default())
        .metadata("x-big", Bytes::from(vec![b'a'; 2000]))
        .await
        .expect_err("over the header limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("server's limit of 1024"), "{status}");
    client.echo(Echo::default()).metadata("x-small", "ok").await.expect("under the limit, same connection");
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_without_a_preface_is_closed_after_the_preface_timeout() {
    let server = common::serve_with(|b| b.preface_timeout(Duration::from_millis(200))).await;
    let mut raw = RawClient::connect_bare(server.addr).await;
    // Silence: the server gives up and closes.
    let _ = raw.raw_until_closed().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("others still served");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unanswered_keepalive_fails_the_calls_in_flight_with_unavailable() {
    // A "server" that speaks the preface and then never answers anything, pings included.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        tokio::io::AsyncWriteExt::write_all(&mut socket, &rpc_core::internals::wire::PREFACE)
            .await
            .expect("preface");
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
    });
    let channel = Channel::builder(addr)
        .keepalive_interval(Some(Duration::from_millis(100)))
        .keepalive_timeout(Duration::from_millis(100))
        .connect()
        .await
        .expect("connect");
    let status = TestClient::new(channel).echo(Echo::default()).await.expect_err("dead connection");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("keepalive"), "{status}");
    silent.abort();
}

#[tokio::test]
async fn a_busy_connection_is_not_declared_dead_by_keepalive() {
    let server = common::serve().await;
    let channel = Channel::builder(server.addr)
        .keepalive_interval(Some(Duration::from_millis(20)))
        .keepalive_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel);
    // A call longer than many keepalive periods: the server answers pings meanwhile.
    let reply = client.sleep(Sleep { id: 1, millis: 600 }).await.expect("survives keepalive");
    assert_eq!(reply.id, 1);
    server.shutdown().await;
}
