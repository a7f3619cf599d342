//! Streaming calls of every kind over a real socket: order, concurrency, flow control,
//! fairness with unary calls, cancellation, errors and deadlines.

pub mod service;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code};

use crate::common::{self, Echo, Running, TestClient, eventually};
use crate::raw::RawClient;
use rpc_core::codec::ProstCodec;
use rpc_core::internals::wire::{Frame, FrameKind};
pub use service::*;

/// A server with the unary test service and the stream service, and a channel to it.
async fn setup(
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> (Running, Arc<StreamProbe>, Channel) {
    let service = StreamService::default();
    let probe = Arc::clone(&service.probe);
    let server = common::serve_with(|b| configure(b.add_service(StreamsServer::new(service)))).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    (server, probe, channel)
}

fn item(n: u64) -> Item {
    Item { n, payload: Bytes::new() }
}

#[tokio::test]
async fn server_stream_delivers_every_message_in_order_then_ends() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let mut items =
        client.count(CountRequest { count: 100, size: 10, ..Default::default() }).await.expect("open");
    for n in 0..100 {
        let item = items.message().await.expect("no error").expect("an item");
        assert_eq!(item.n, n);
        assert_eq!(item.payload.len(), 10);
    }
    assert_eq!(items.message().await.expect("clean end"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_stream_is_fed_from_any_stream() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let (mut requests, response) = client.sum().await.expect("open");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let producer = tokio::spawn(async move {
        for n in 1..=10 {
            tx.send(item(n)).await.expect("queue");
        }
    });
    let rx = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    requests.send_stream(rx).await.expect("every message sent");
    requests.close();
    producer.await.expect("producer");
    let total = response.await.expect("response");
    assert_eq!((total.sum, total.count), (55, 10));
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_sender_is_a_sink() {
    use futures_util::SinkExt;
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let (mut requests, response) = client.sum().await.expect("open");
    requests.send(item(1)).await.expect("send");
    // Through the Sink: `feed` then `close`, which ends the requests.
    SinkExt::feed(&mut requests, item(2)).await.expect("feed");
    SinkExt::close(&mut requests).await.expect("close ends the stream");
    let total = response.await.expect("the server saw the end of the requests");
    assert_eq!((total.sum, total.count), (3, 2));
    server.shutdown().await;
}

#[tokio::test]
async fn client_stream_is_summed_and_the_response_carries_trailers() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let (mut requests, response) = client.sum().await.expect("open");
    for n in 1..=100 {
        requests.send(item(n)).await.expect("send");
    }
    requests.close();
    let total = response.await.expect("response");
    assert_eq!((total.sum, total.count), (5050, 100));
    server.shutdown().await;
}

#[tokio::test]
async fn bidi_stream_echoes_in_order_and_ends_after_the_client_closes() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let (mut tx, mut rx) = client.echo().await.expect("open");
    for n in 0..50 {
        tx.send(item(n)).await.expect("send");
        assert_eq!(rx.message().await.expect("ok").expect("echo").n, n);
    }
    drop(tx);
    assert_eq!(rx.message().await.expect("clean end"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_implements_the_stream_trait() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let items = client.count(CountRequest { count: 10, ..Default::default() }).await.expect("open");
    let numbers: Vec<u64> = items.map(|item| item.expect("ok").n).collect().await;
    assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams_share_one_connection() {
    let (server, probe, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let streams = (0..100u64).map(|s| {
        let client = client.clone();
        async move {
            let (mut tx, mut rx) = client.echo().await.expect("open");
            for n in 0..20 {
                tx.send(item(s * 1000 + n)).await.expect("send");
            }
            drop(tx);
            let mut got = Vec::new();
            while let Some(item) = rx.message().await.expect("ok") {
                got.push(item.n);
            }
            assert_eq!(got, (0..20).map(|n| s * 1000 + n).collect::<Vec<_>>(), "stream {s}");
        }
    });
    futures_util::future::join_all(streams).await;
    assert_eq!(probe.started.load(Ordering::SeqCst), 100);
    assert_eq!(probe.received.load(Ordering::SeqCst), 2000);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_messages_to_a_slow_consumer_stay_within_the_windows() {
    const COUNT: u64 = 1_000_000;
    const WINDOW: u64 = 64 * 1024;
    let (server, probe, _) = setup(|b| b.stream_window(WINDOW)).await;
    let channel = Channel::builder(server.addr).stream_window(WINDOW).connect().await.expect("connect");
    let client = StreamsClient::new(channel);
    let mut items = client.count(CountRequest { count: COUNT, ..Default::default() }).await.expect("open");

    // An item of one varint costs at least 4 frame bytes (kind, flags, id, header length)
    // plus 2 to 5 of body; both sides may hold a window, plus one message of overdraft.
    let bound = (2 * WINDOW / 5) as usize + 16;
    let mut most_buffered = 0;
    let mut most_ahead = 0;
    for n in 0..COUNT {
        let item = items.message().await.expect("ok").expect("an item");
        assert_eq!(item.n, n);
        if n % 1000 == 0 {
            // Read slowly, stalling now and then; then look at how far the producer got.
            let stall = if n % 250_000 == 0 { 300 } else { 1 };
            tokio::time::sleep(Duration::from_millis(stall)).await;
            most_buffered = most_buffered.max(items.queued());
            let ahead = probe.sent.load(Ordering::SeqCst).saturating_sub(n) as usize;
            most_ahead = most_ahead.max(ahead);
            assert!(items.queued() <= bound, "{} messages buffered at item {n}", items.queued());
            assert!(ahead <= 2 * bound, "the producer ran {ahead} items ahead at item {n}");
        }
    }
    assert_eq!(items.message().await.expect("clean end"), None);
    // The windows were actually reached: the consumer really was the slower side.
    assert!(most_buffered > 1000, "the stream never backed up (at most {most_buffered} buffered)");
    assert!(most_ahead > 1000, "the producer never got ahead ({most_ahead})");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_reader_pushes_back_on_the_client_sender() {
    const WINDOW: u64 = 64 * 1024;
    let (server, probe, _) = setup(|b| b.stream_window(WINDOW)).await;
    let channel = Channel::builder(server.addr).stream_window(WINDOW).connect().await.expect("connect");
    let client = StreamsClient::new(channel);
    let (mut requests, response) = client.slow_sum().await.expect("open");
    let payload = Bytes::from(vec![1u8; 1024]);
    let mut sent = 0u64;
    // The server reads one item per millisecond; sending 400 KiB cannot finish ahead of it
    // by more than the windows (64 KiB granted + 64 KiB of local budget).
    for n in 0..400 {
        requests.send(Item { n, payload: payload.clone() }).await.expect("send");
        sent += 1;
        let read = probe.received.load(Ordering::SeqCst);
        assert!(sent - read <= 140, "sent {sent} while the server had read {read}");
    }
    requests.close();
    let total = response.await.expect("response");
    assert_eq!(total.count, 400);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_calls_keep_flowing_beside_a_100_mib_stream() {
    let (server, _, channel) = setup(|b| b).await;
    let streams = StreamsClient::new(channel.clone());
    let unary = TestClient::new(channel);
    let transfer = tokio::spawn(async move {
        let mut items = streams
            .count(CountRequest { count: 1600, size: 64 * 1024, ..Default::default() })
            .await
            .expect("open");
        let mut bytes = 0;
        while let Some(item) = items.message().await.expect("ok") {
            bytes += item.payload.len();
        }
        bytes
    });
    let mut calls = 0;
    let mut slowest = Duration::ZERO;
    while !transfer.is_finished() {
        let started = Instant::now();
        unary.echo(Echo { payload: Bytes::from_static(b"ping") }).await.expect("unary call");
        slowest = slowest.max(started.elapsed());
        calls += 1;
    }
    assert_eq!(transfer.await.expect("transfer"), 1600 * 64 * 1024);
    assert!(calls >= 10, "only {calls} unary calls completed during the transfer");
    assert!(slowest < Duration::from_secs(2), "a unary call took {slowest:?} during the transfer");
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_a_server_stream_midway_cancels_the_handler() {
    let (server, probe, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let mut items = client
        .count(CountRequest { count: 1_000_000, pause_micros: 100, ..Default::default() })
        .await
        .expect("open");
    for _ in 0..10 {
        items.message().await.expect("ok").expect("item");
    }
    drop(items);
    eventually("the handler is abandoned", || probe.abandoned.load(Ordering::SeqCst) == 1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_error_after_n_messages_arrives_after_those_messages() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let request = CountRequest { count: 7, fail_code: Code::DataLoss as u32, ..Default::default() };
    let mut items = client.count(request).await.expect("open");
    for n in 0..7 {
        assert_eq!(items.message().await.expect("item before the error").expect("item").n, n);
    }
    let status = items.message().await.expect_err("then the status");
    assert_eq!(status.code(), Code::DataLoss);
    assert_eq!(status.message(), "failed after 7 items");
    server.shutdown().await;
}

#[tokio::test]
async fn a_deadline_mid_stream_is_deadline_exceeded_on_both_sides() {
    let (server, probe, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    let mut items = client
        .count(CountRequest { count: 1_000_000, pause_micros: 10_000, ..Default::default() })
        .timeout(Duration::from_millis(300))
        .await
        .expect("open");
    let started = Instant::now();
    let status = loop {
        match items.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended normally"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually("the handler is stopped", || probe.abandoned.load(Ordering::SeqCst) == 1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn calling_a_streaming_method_as_unary_and_the_reverse_is_unimplemented() {
    let (server, _, channel) = setup(|b| b).await;
    let status = channel
        .unary::<CountRequest, Item, rpc_core::codec::ProstCodec>(
            "/test.v1.Streams/Count",
            CountRequest::default(),
        )
        .await
        .expect_err("not unary");
    assert_eq!(status.code(), Code::Unimplemented);
    // The server answers the open with its status: the call fails as it opens, not at its
    // first message.
    let status = channel
        .bidi_streaming::<Echo, Echo, rpc_core::codec::ProstCodec>("/test.v1.Test/Echo")
        .await
        .expect_err("not streaming");
    assert_eq!(status.code(), Code::Unimplemented);
    server.shutdown().await;
}

/// Each streaming kind, called on a method the server lacks, fails as it opens, with the
/// server's UNIMPLEMENTED (docs/PROTOCOL.md §8.1: the client waits for STREAM_ACCEPT).
#[tokio::test]
async fn a_streaming_call_to_a_method_the_server_lacks_fails_as_it_opens() {
    let (server, probe, channel) = setup(|b| b).await;
    const METHOD: &str = "/test.v1.Streams/NoSuchMethod";
    let server_streaming =
        channel.server_streaming::<Item, Item, ProstCodec>(METHOD, item(1)).await.expect_err("unknown");
    let client_streaming =
        channel.client_streaming::<Item, Item, ProstCodec>(METHOD).await.expect_err("unknown");
    let bidi = channel.bidi_streaming::<Item, Item, ProstCodec>(METHOD).await.expect_err("unknown");
    for status in [server_streaming, client_streaming, bidi] {
        assert_eq!(status.code(), Code::Unimplemented, "{status}");
        assert!(status.message().contains("NoSuchMethod"), "{status}");
    }
    // The connection is none the worse: a real stream opens and runs on it.
    let mut items = StreamsClient::new(channel)
        .count(CountRequest { count: 3, ..Default::default() })
        .await
        .expect("open");
    let mut n = 0;
    while items.message().await.expect("ok").is_some() {
        n += 1;
    }
    assert_eq!((n, probe.started.load(Ordering::SeqCst)), (3, 1));
    server.shutdown().await;
}

/// A server that announces STREAM_ACCEPTS is waited for, within the call's deadline; one
/// that does not (an older one) is not.
#[tokio::test]
async fn the_open_waits_for_stream_accept_only_from_servers_that_announce_it() {
    async fn raw_server(accepts: bool) -> (std::net::SocketAddr, tokio::task::JoinHandle<RawClient>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut raw = RawClient::accept(&listener).await;
            let mut settings = Frame::new(FrameKind::Settings, 0);
            settings.header.stream_accepts = accepts.then_some(1);
            raw.send(&settings).await;
            raw
        });
        (addr, task)
    }

    // No STREAM_ACCEPTS: the open completes though the server never answers.
    let (addr, task) = raw_server(false).await;
    let channel = Channel::connect(addr).await.expect("connect");
    let mut raw = task.await.expect("server");
    let opened = channel.bidi_streaming::<Item, Item, ProstCodec>("/test.v1.Streams/Echo").await;
    assert!(opened.is_ok(), "an older server is not waited for");
    assert_eq!(raw.next_of(FrameKind::StreamOpen).await.call_id, 1);

    // STREAM_ACCEPTS: no accept, no open, until the deadline.
    let (addr, task) = raw_server(true).await;
    let channel = Channel::connect(addr).await.expect("connect");
    let mut raw = task.await.expect("server");
    let status = channel
        .bidi_streaming::<Item, Item, ProstCodec>("/test.v1.Streams/Echo")
        .timeout(Duration::from_millis(200))
        .await
        .expect_err("never accepted");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // With the accept, the next one opens.
    let opening = tokio::spawn({
        let channel = channel.clone();
        async move { channel.bidi_streaming::<Item, Item, ProstCodec>("/test.v1.Streams/Echo").await.map(drop) }
    });
    let open = loop {
        let open = raw.next_of(FrameKind::StreamOpen).await;
        if open.call_id != 1 {
            break open;
        }
    };
    raw.send(&Frame::new(FrameKind::StreamAccept, open.call_id)).await;
    opening.await.expect("task").expect("accepted");
}

#[tokio::test]
async fn sending_on_a_stream_the_server_ended_fails_with_its_status() {
    let (server, _, channel) = setup(|b| b).await;
    let client = StreamsClient::new(channel);
    // A server-streaming method opened as bidi: its one request must be all there is, so
    // the server ends the call at the second.
    let (mut tx, mut rx) = client
        .channel()
        .bidi_streaming::<Item, Item, rpc_core::codec::ProstCodec>("/test.v1.Streams/Count")
        .await
        .expect("open");
    tx.send(item(1)).await.expect("the request");
    tx.send(item(2)).await.expect("one too many, sent before the server said so");
    let status = rx.message().await.expect_err("two requests");
    assert_eq!(status.code(), Code::InvalidArgument);
    let err = tx.send(item(3)).await.expect_err("the stream is over");
    assert_eq!(err.code(), Code::InvalidArgument);
    server.shutdown().await;
}

#[tokio::test]
async fn stream_data_past_the_credit_plus_one_frame_is_a_flow_control_violation() {
    const WINDOW: u64 = 64 * 1024;
    let (server, probe, channel) = setup(|b| b.stream_window(WINDOW).max_frame_size(WINDOW as usize)).await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Ignore"));
    raw.send(&open).await;
    eventually("the handler runs", || probe.started.load(Ordering::SeqCst) == 1).await;

    // The handler reads nothing, so no credit comes back. A message costs 16,392 bytes: seven
    // stay within window + one frame (131,072), the eighth goes past.
    let mut message = Frame::new(FrameKind::StreamMessage, 1);
    message.body =
        prost::Message::encode_to_vec(&Item { n: 0, payload: Bytes::from(vec![0; 16 * 1024]) }).into();
    assert_eq!(message.payload_len(), 16_392);
    for _ in 0..7 {
        raw.send(&message).await;
    }
    let mut ping = Frame::new(FrameKind::Ping, 0);
    ping.body = Bytes::from_static(b"still ok");
    raw.send(&ping).await;
    assert_eq!(raw.next_of(FrameKind::Pong).await.body.as_ref(), b"still ok");

    raw.send(&message).await;
    let goaway = raw.until_closed().await.into_iter().find(|f| f.kind == FrameKind::GoAway).expect("goaway");
    let text =
        String::from_utf8_lossy(goaway.header.status_message.as_deref().unwrap_or_default()).into_owned();
    assert!(text.contains("flow-control violation: stream window overrun"), "{text}");
    // Other connections are unaffected.
    TestClient::new(channel).echo(Echo::default()).await.expect("still serving");
    server.shutdown().await;
}

// Regression tests found by review: lost events, credit leaks, stalls and a lost wake-up.

/// A stream on a connection that got GOAWAY keeps working while a new call reconnects.
#[tokio::test]
async fn an_upload_on_a_draining_connection_survives_a_reconnect_beside_it() {
    let service = StreamService::default();
    let probe = Arc::clone(&service.probe);
    let mut server = common::serve_with(|b| {
        b.add_service(StreamsServer::new(service)).shutdown_grace(Duration::from_secs(20))
    })
    .await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let streams = StreamsClient::new(channel.clone());
    let unary = TestClient::new(channel.clone());
    let (mut requests, response) = streams.sum().await.expect("open");
    requests.send(Item { n: 1, payload: Bytes::new() }).await.expect("send");
    eventually("first item read", || probe.received.load(Ordering::SeqCst) == 1).await;
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await; // GOAWAY read; connection draining
    // Some other call needs a new connection...
    let other = std::future::IntoFuture::into_future(unary.echo(Echo::default()));
    // ...while the upload continues on the old one.
    requests.send(Item { n: 2, payload: Bytes::new() }).await.expect("send");
    requests.close();
    let total = tokio::time::timeout(Duration::from_secs(5), response).await;
    drop(other);
    let total = total.expect("upload answered within 5s").expect("ok");
    assert_eq!((total.sum, total.count), (3, 2));
    server.join().await;
}

/// Messages the server discards (it ended the call early: here a server-streaming method
/// opened as bidi gets far more than its one request) must have their connection credit
/// granted back, or the client's connection window leaks away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_stream_messages_do_not_leak_connection_credit() {
    let service = StreamService::default();
    let server = common::serve_with(|b| b.add_service(StreamsServer::new(service))).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let chunk = Item { n: 0, payload: Bytes::from(vec![1u8; 60 * 1024]) };
    for _ in 0..40 {
        let (mut tx, mut rx) =
            channel.bidi_streaming::<Item, Item, ProstCodec>("/test.v1.Streams/Count").await.expect("open");
        for _ in 0..16 {
            if tx.send(chunk.clone()).await.is_err() {
                break;
            }
        }
        let _ = rx.message().await;
    }
    let client = StreamsClient::new(channel);
    let upload = async {
        let (mut requests, response) = client.sum().await?;
        for n in 0..100 {
            requests.send(Item { n, payload: chunk.payload.clone() }).await?;
        }
        requests.close();
        response.await
    };
    let total = tokio::time::timeout(Duration::from_secs(10), upload).await.expect("no stall").expect("ok");
    assert_eq!(total.count, 100);
    server.shutdown().await;
}

/// Connection credit is counted in frame payload bytes by both sides (§8): a sender that
/// charged itself for the length prefixes too would drift a byte per small message below
/// what the receiver has granted, and stall for good once the drift passed half the window
/// (a 64-byte message stream on default windows stopped after about 8.6 million messages).
/// With the 1 MiB minimum window, 1.5 million tiny messages cover that drift three times
/// over, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_credit_does_not_drift_over_millions_of_small_messages() {
    const COUNT: u64 = 1_500_000;
    const WINDOW: u64 = rpc_core::stream::MIN_CONNECTION_WINDOW;
    let (server, _, _) = setup(|b| b.connection_window(WINDOW)).await;
    let channel = Channel::builder(server.addr).connection_window(WINDOW).connect().await.expect("connect");
    let client = StreamsClient::new(channel);

    let download = async {
        let mut items = client.count(CountRequest { count: COUNT, ..Default::default() }).await?;
        let mut n = 0;
        while items.message().await?.is_some() {
            n += 1;
        }
        Ok::<_, rpc_core::Status>(n)
    };
    let n = tokio::time::timeout(Duration::from_secs(120), download).await.expect("no stall").expect("ok");
    assert_eq!(n, COUNT);

    let upload = async {
        let (mut requests, response) = client.sum().await?;
        requests.send_all((0..COUNT).map(item)).await?;
        requests.close();
        response.await
    };
    let total = tokio::time::timeout(Duration::from_secs(120), upload).await.expect("no stall").expect("ok");
    assert_eq!(total.count, COUNT);
    server.shutdown().await;
}

/// Nine consumers that do not read hold ~9 MiB of the 16 MiB connection window; a tenth
/// stream that is read eagerly must still make progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_stream_is_not_starved_by_idle_ones_holding_half_the_connection_window() {
    let service = StreamService::default();
    let server = common::serve_with(|b| b.add_service(StreamsServer::new(service))).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let client = StreamsClient::new(channel);
    let mut idle = Vec::new();
    for _ in 0..9 {
        idle.push(
            client
                .count(CountRequest { count: 100, size: 64 * 1024, ..Default::default() })
                .await
                .expect("open"),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read_all = async {
        let mut items =
            client.count(CountRequest { count: 400, size: 64 * 1024, ..Default::default() }).await?;
        let mut n = 0;
        while items.message().await?.is_some() {
            n += 1;
        }
        Ok::<_, rpc_core::Status>(n)
    };
    let n = tokio::time::timeout(Duration::from_secs(20), read_all).await.expect("no stall").expect("ok");
    assert_eq!(n, 400);
    drop(idle);
    server.shutdown().await;
}

/// Messages for a call the server no longer tracks count as consumed (§8.3): their
/// connection credit must come back, or a compliant client runs dry.
#[tokio::test]
async fn discarded_stream_messages_are_granted_back_at_connection_level() {
    use rpc_core::internals::wire::{Frame, FrameKind};
    let service = StreamService::default();
    let server =
        common::serve_with(|b| b.add_service(StreamsServer::new(service)).connection_window(1024 * 1024))
            .await;
    let mut raw = crate::raw::RawClient::connect(server.addr).await;
    let mut message = Frame::new(FrameKind::StreamMessage, 7);
    message.body = Bytes::from(vec![0u8; 60 * 1024]);
    for _ in 0..15 {
        raw.send(&message).await; // 15 x 60 KiB = 900 KiB of the 1 MiB granted
    }
    let mut ping = Frame::new(FrameKind::Ping, 0);
    ping.body = Bytes::from_static(b"12345678");
    raw.send(&ping).await;
    let mut granted = 0;
    loop {
        let frame = raw.next().await.expect("frames").expect("open");
        match frame.kind {
            FrameKind::WindowUpdate if frame.call_id == 0 => {
                granted += frame.header.window_increment.unwrap_or(0)
            }
            FrameKind::Pong => break,
            _ => {}
        }
    }
    assert!(granted >= 512 * 1024, "only {granted} bytes of connection credit granted back");
    // Gone, rather than holding the shutdown for its grace period by not answering its ping.
    drop(raw);
    server.shutdown().await;
}

/// A stream's messages queued in the same turn as a large unary response must still go out.
#[tokio::test]
async fn stream_data_queued_behind_a_large_unary_response_is_not_stranded() {
    use bytes::BytesMut;
    use rpc_core::internals::wire::{Frame, FrameCodec, FrameKind};
    use tokio_util::codec::Encoder;
    let service = StreamService::default();
    let server = common::serve_with(|b| b.add_service(StreamsServer::new(service))).await;
    let mut raw = crate::raw::RawClient::connect(server.addr).await;
    let mut out = BytesMut::new();
    let mut codec = FrameCodec::new();
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Count"));
    codec.encode(&open, &mut out).expect("encode");
    let mut msg = Frame::new(FrameKind::StreamMessage, 1);
    msg.body = prost::Message::encode_to_vec(&CountRequest { count: 3, ..Default::default() }).into();
    codec.encode(&msg, &mut out).expect("encode");
    codec.encode(&Frame::new(FrameKind::StreamEnd, 1), &mut out).expect("encode");
    let mut req = Frame::new(FrameKind::Request, 3);
    req.header.method = Some(Bytes::from_static(b"/test.v1.Test/Big"));
    req.body = prost::Message::encode_to_vec(&common::Size { bytes: 70 * 1024 }).into();
    codec.encode(&req, &mut out).expect("encode");
    raw.send_bytes(&out).await;
    let mut got = Vec::new();
    loop {
        // `next` fails the test if nothing arrives for 10 s.
        let frame = raw.next().await.expect("frames").expect("open");
        got.push((frame.kind, frame.call_id));
        if frame.kind == FrameKind::StreamEnd && frame.call_id == 1 {
            break;
        }
    }
    // The rest of the large response is never read: close the connection rather than make
    // the shutdown wait out its grace period for it.
    drop(raw);
    server.shutdown().await;
}

/// §8a: at its deadline the server ends the stream with DEADLINE_EXCEEDED "whatever state
/// the stream is in" — including when its messages are waiting for credit.
#[tokio::test]
async fn the_server_ends_a_stream_at_its_deadline_even_with_messages_waiting_for_credit() {
    use rpc_core::internals::wire::{Frame, FrameKind};
    let service = StreamService::default();
    let server = common::serve_with(|b| b.add_service(StreamsServer::new(service))).await;
    let mut raw = crate::raw::RawClient::connect(server.addr).await;
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Count"));
    open.header.timeout = Some(Duration::from_millis(300));
    raw.send(&open).await;
    let mut msg = Frame::new(FrameKind::StreamMessage, 1);
    msg.body =
        prost::Message::encode_to_vec(&CountRequest { count: 1000, size: 60 * 1024, ..Default::default() })
            .into();
    raw.send(&msg).await;
    raw.send(&Frame::new(FrameKind::StreamEnd, 1)).await;
    let end = raw.next_of(FrameKind::StreamEnd).await;
    assert_eq!(end.header.status_code, Some(rpc_core::Code::DeadlineExceeded as u32));
    server.kill().await;
}
