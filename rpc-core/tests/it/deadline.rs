//! Deadlines: the caller's timeout travels with the request, both sides enforce it, and
//! the server stops the handler.

use std::time::{Duration, Instant};

use rpc_core::internals::wire::{Frame, FrameKind};
use rpc_core::{Channel, Code};

use crate::common::{self, Empty, Sleep, TestClient, eventually};
use crate::raw::RawClient;

#[tokio::test]
async fn deadline_shorter_than_the_handler_is_deadline_exceeded_at_about_the_deadline() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let started = Instant::now();
    let status = client
        .sleep(Sleep { id: 1, millis: 30_000 })
        .timeout(Duration::from_millis(200))
        .await
        .expect_err("times out");
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(elapsed >= Duration::from_millis(200), "answered before the deadline: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "answered long after the deadline: {elapsed:?}");
    // The server stopped the handler rather than letting it sleep on.
    eventually("the handler is abandoned", || server.probe.abandoned() == 1).await;
    server.shutdown().await;
}

#[tokio::test]
async fn the_handler_sees_the_callers_deadline() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let info = client.deadline(Empty {}).timeout(Duration::from_secs(60)).await.expect("call");
    assert!(info.has_deadline);
    assert!(info.remaining_millis > 50_000 && info.remaining_millis <= 60_000, "{info:?}");
    let info = client.deadline(Empty {}).await.expect("call");
    assert!(!info.has_deadline);
    server.shutdown().await;
}

#[tokio::test]
async fn the_channel_default_timeout_applies_to_calls_without_one() {
    let server = common::serve().await;
    let channel =
        Channel::builder(server.addr).timeout(Duration::from_millis(100)).connect().await.expect("connect");
    let client = TestClient::new(channel);
    let status = client.sleep(Sleep { id: 1, millis: 30_000 }).await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    // A per-call timeout overrides the default.
    let info = client.deadline(Empty {}).timeout(Duration::from_secs(60)).await.expect("call");
    assert!(info.remaining_millis > 50_000, "{info:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_server_enforces_the_deadline_on_its_own() {
    // A raw client with no timer of its own: only the server can end this call.
    let server = common::serve().await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut request = Frame::new(FrameKind::Request, 1);
    request.header.method = Some("/test.v1.Test/Sleep".into());
    request.header.timeout = Some(Duration::from_millis(100));
    request.body = prost::Message::encode_to_vec(&Sleep { id: 1, millis: 30_000 }).into();
    raw.send(&request).await;
    let response = raw.next_of(FrameKind::Response).await;
    assert_eq!(response.call_id, 1);
    assert_eq!(response.header.status_code, Some(Code::DeadlineExceeded as u32));
    eventually("the handler is abandoned", || server.probe.abandoned() == 1).await;
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn dropping_the_call_cancels_the_handler() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 1, millis: 30_000 }).await }
    });
    eventually("the handler starts", || server.probe.started.load(std::sync::atomic::Ordering::SeqCst) == 1)
        .await;
    call.abort();
    eventually("the handler is abandoned", || server.probe.abandoned() == 1).await;
    // The connection carries on.
    client.sleep(Sleep { id: 2, millis: 0 }).await.expect("next call");
    server.shutdown().await;
}

#[tokio::test]
async fn an_enormous_timeout_is_no_deadline_rather_than_an_error() {
    let server = common::serve().await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut request = Frame::new(FrameKind::Request, 1);
    request.header.method = Some("/test.v1.Test/Deadline".into());
    request.header.timeout = Some(Duration::from_micros(u64::MAX));
    raw.send(&request).await;
    let response = raw.next_of(FrameKind::Response).await;
    assert_eq!(response.header.status_code, None, "{response:?}");
    let info: common::DeadlineInfo = prost::Message::decode(response.body).expect("decodes");
    assert!(!info.has_deadline, "a timeout past the cap must mean no deadline: {info:?}");
    drop(raw);
    server.shutdown().await;
}
