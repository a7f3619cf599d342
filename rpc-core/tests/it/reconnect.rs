//! A channel outlives its connections: dead connections fail their calls with
//! `Unavailable`, and the channel connects again.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rpc_core::{Channel, Code};
use tokio::net::TcpListener;

use crate::common::{self, Echo, Sleep, TestClient, eventually};

/// A loopback address nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_call_is_unavailable_and_the_same_channel_works_once_it_is_back() {
    let server = common::serve().await;
    let addr = server.addr;
    let client = TestClient::new(Channel::connect(addr).await.expect("connect"));
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 1, millis: 30_000 }).await }
    });
    eventually("the call is running", || server.probe.started.load(Ordering::SeqCst) == 1).await;

    server.kill().await;
    let status = in_flight.await.expect("task").expect_err("server died");
    assert_eq!(status.code(), Code::Unavailable, "{status}");

    // While nothing listens, calls fail fast with Unavailable.
    let status = client.echo(Echo::default()).await.expect_err("nothing listening");
    assert_eq!(status.code(), Code::Unavailable, "{status}");

    // The server comes back on the same address.
    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let revived = common::serve_on(listener, |b| b).await;
    let mut attempts = 0;
    let reply = loop {
        // The failed connect above put the channel in a short backoff: wait it out.
        match client.sleep(Sleep { id: 2, millis: 0 }).await {
            Ok(reply) => break reply,
            Err(status) if status.code() == Code::Unavailable && attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("after {attempts} attempts: {status}"),
        }
    };
    assert_eq!(reply.id, 2);
    revived.shutdown().await;
}

#[tokio::test]
async fn a_dropped_connection_reconnects_on_the_next_call_without_delay() {
    let server = common::serve().await;
    let addr = server.addr;
    let client = TestClient::new(Channel::connect(addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("first connection");
    server.kill().await;
    let revived = common::serve_on(TcpListener::bind(addr).await.expect("rebind"), |b| b).await;
    // A call sent before the channel noticed the close fails with it; the one after that
    // reconnects at once, with no backoff to wait out (the connection had been fine).
    let mut attempts = 0;
    loop {
        attempts += 1;
        match client.echo(Echo::default()).await {
            Ok(_) => break,
            Err(status) if attempts == 1 => assert_eq!(status.code(), Code::Unavailable, "{status}"),
            Err(status) => panic!("attempt {attempts}: {status}"),
        }
    }
    revived.shutdown().await;
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable() {
    let addr = closed_port().await;
    let status = Channel::connect(addr).await.expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains(&addr.to_string()), "{status}");
}

#[tokio::test]
async fn during_backoff_calls_fail_fast_then_a_later_call_connects() {
    let addr = closed_port().await;
    let channel = Channel::builder(addr)
        .reconnect_backoff(Duration::from_millis(1500), Duration::from_secs(3))
        .connect_lazy();
    let client = TestClient::new(channel);
    let first = client.echo(Echo::default()).await.expect_err("refused");
    assert_eq!(first.code(), Code::Unavailable);
    let second = client.echo(Echo::default()).await.expect_err("in backoff");
    assert_eq!(second.code(), Code::Unavailable);
    assert!(second.message().contains("next attempt in"), "{second}");

    let server = common::serve_on(TcpListener::bind(addr).await.expect("bind"), |b| b).await;
    // The backoff is 1.2 to 1.8 s: after 2 s the next call connects.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    client.echo(Echo::default()).await.expect("connected after the backoff");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_that_never_sends_its_preface_fails_connect_within_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        Channel::builder(addr).connect_timeout(Duration::from_millis(300)).keepalive_interval(None).connect(),
    )
    .await
    .expect("connect gave up by itself");
    let status = result.expect_err("no preface");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("did not answer with a preface"), "{status}");
    silent.abort();
}

#[tokio::test]
async fn a_peer_that_is_not_a_server_of_this_protocol_is_unavailable_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let http = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    });
    let status = Channel::connect(addr).await.expect_err("not our protocol");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("preface"), "{status}");
    http.abort();
}
