//! The protocol's rules that a careless or hostile peer may break, each with the receiver's
//! action from docs/PROTOCOL.md §14: sent by hand over a real socket, answered as specified,
//! and no other connection disturbed.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rpc_core::internals::wire::{Frame, FrameKind, flags};
use rpc_core::{Channel, Code};

use crate::common::{self, Echo, Running, Sleep, TestClient};
use crate::raw::RawClient;

fn status(frame: &Frame) -> (Code, String) {
    let code = Code::from_u32(frame.header.status_code.unwrap_or(0));
    let message =
        String::from_utf8_lossy(frame.header.status_message.as_deref().unwrap_or_default()).into_owned();
    (code, message)
}

/// Sends `frames` on a fresh connection and returns the `GOAWAY` the server closes it with.
async fn goaway_for(server: &Running, frames: &[Frame]) -> (Code, String) {
    let mut raw = RawClient::connect(server.addr).await;
    for frame in frames {
        raw.send(frame).await;
    }
    let frames = raw.until_closed().await;
    let goaway = frames.iter().find(|f| f.kind == FrameKind::GoAway).expect("a GOAWAY before the close");
    status(goaway)
}

fn echo_request(id: u64) -> Frame {
    let mut frame = Frame::new(FrameKind::Request, id);
    frame.header.method = Some(Bytes::from_static(b"/test.v1.Test/Echo"));
    frame.body = prost::Message::encode_to_vec(&Echo { payload: Bytes::from_static(b"x") }).into();
    frame
}

/// Another client, on its own connection, is served throughout.
async fn canary(server: &Running) {
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    client.echo(Echo::default()).await.expect("another connection is unaffected");
}

#[tokio::test]
async fn call_ids_must_increase() {
    let server = common::serve().await;
    let mut raw = RawClient::connect(server.addr).await;
    raw.send(&echo_request(5)).await;
    assert_eq!(raw.next_of(FrameKind::Response).await.call_id, 5);
    // Call 5 is over; an id below it (never used) is still a violation.
    raw.send(&echo_request(3)).await;
    let frames = raw.until_closed().await;
    let (code, message) = status(frames.iter().find(|f| f.kind == FrameKind::GoAway).expect("GOAWAY"));
    assert_eq!(code, Code::Internal);
    assert!(message.contains("not greater"), "{message}");
    canary(&server).await;
}

#[tokio::test]
async fn connection_level_frames_on_a_call_id_are_violations() {
    let server = common::serve().await;
    for kind in [FrameKind::Settings, FrameKind::Ping, FrameKind::Pong, FrameKind::GoAway] {
        let (code, message) = goaway_for(&server, &[Frame::new(kind, 9)]).await;
        assert_eq!(code, Code::Internal, "{kind:?}");
        assert!(message.contains("on a call id"), "{kind:?}: {message}");
    }
    canary(&server).await;
}

#[tokio::test]
async fn settings_below_the_minimums_are_violations_that_say_which() {
    let server = common::serve().await;
    type Case = (fn(&mut Frame), &'static str);
    let cases: [Case; 4] = [
        (|f| f.header.max_frame_size = Some(40), "MAX_FRAME_SIZE"),
        (|f| f.header.max_header_size = Some(100), "MAX_HEADER_SIZE"),
        (|f| f.header.initial_window = Some(1000), "INITIAL_WINDOW below"),
        (|f| f.header.initial_window = Some(u64::MAX), "INITIAL_WINDOW past"),
    ];
    for (set, what) in cases {
        let mut settings = Frame::new(FrameKind::Settings, 0);
        set(&mut settings);
        let (code, message) = goaway_for(&server, &[settings]).await;
        assert_eq!(code, Code::Internal);
        assert!(message.contains(what), "{what}: {message}");
    }
    // A window may grow, and may not shrink.
    let mut larger = Frame::new(FrameKind::Settings, 0);
    larger.header.initial_window = Some(1 << 20);
    let mut smaller = larger.clone();
    smaller.header.initial_window = Some(1 << 17);
    let (_, message) = goaway_for(&server, &[larger, smaller]).await;
    assert!(message.contains("INITIAL_WINDOW lowered"), "{message}");
    canary(&server).await;
}

#[tokio::test]
async fn a_window_update_must_grant_something_and_not_overflow_the_credit() {
    let server = common::serve().await;
    let zero = {
        let mut frame = Frame::new(FrameKind::WindowUpdate, 0);
        frame.header.window_increment = Some(0);
        frame
    };
    let (_, message) = goaway_for(&server, &[zero]).await;
    assert!(message.contains("positive WINDOW_INCREMENT"), "{message}");
    let (_, message) = goaway_for(&server, &[Frame::new(FrameKind::WindowUpdate, 0)]).await;
    assert!(message.contains("positive WINDOW_INCREMENT"), "{message}");
    let huge = {
        let mut frame = Frame::new(FrameKind::WindowUpdate, 0);
        frame.header.window_increment = Some(1 << 62);
        frame
    };
    let (code, message) = goaway_for(&server, &[huge.clone(), huge]).await;
    assert_eq!(code, Code::Internal);
    assert!(message.contains("2^63"), "{message}");
    canary(&server).await;
}

#[tokio::test]
async fn a_call_with_no_time_left_is_answered_without_running_its_handler() {
    let server = common::serve().await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut request = Frame::new(FrameKind::Request, 1);
    request.header.method = Some(Bytes::from_static(b"/test.v1.Test/Sleep"));
    request.header.timeout = Some(std::time::Duration::ZERO);
    request.body = prost::Message::encode_to_vec(&Sleep { id: 1, millis: 0 }).into();
    raw.send(&request).await;
    let response = raw.next_of(FrameKind::Response).await;
    assert_eq!(status(&response).0, Code::DeadlineExceeded);
    // The connection goes on; the handler never started.
    raw.send(&echo_request(2)).await;
    assert_eq!(raw.next_of(FrameKind::Response).await.call_id, 2);
    assert_eq!(server.probe.started.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_client_goaway_lets_its_calls_finish_then_the_server_closes() {
    let server = common::serve().await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut slow = Frame::new(FrameKind::Request, 1);
    slow.header.method = Some(Bytes::from_static(b"/test.v1.Test/Sleep"));
    slow.body = prost::Message::encode_to_vec(&Sleep { id: 1, millis: 100 }).into();
    raw.send(&slow).await;
    common::eventually("the call runs", || server.probe.started.load(Ordering::SeqCst) == 1).await;
    let mut goaway = Frame::new(FrameKind::GoAway, 0);
    goaway.header.status_code = Some(Code::Unavailable as u32);
    raw.send(&goaway).await;
    // A call after its own GOAWAY is refused, not run.
    raw.send(&echo_request(2)).await;
    let frames = raw.until_closed().await;
    let answer =
        |id| frames.iter().find(|f| f.kind == FrameKind::Response && f.call_id == id).expect("answered");
    assert_eq!(status(answer(1)).0, Code::Ok, "the call in flight is answered");
    let refused = answer(2);
    assert_eq!(status(refused).0, Code::Unavailable);
    assert_ne!(refused.flags & flags::REFUSED, 0);
    canary(&server).await;
}

#[tokio::test]
async fn a_body_on_a_stream_open_is_ignored() {
    let (server, _events) = common::serve_tracked(|b| {
        b.add_service(crate::streams::StreamsServer::new(crate::streams::StreamService::default()))
    })
    .await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Sum"));
    open.body = Bytes::from_static(b"ignored");
    raw.send(&open).await;
    raw.send(&Frame::new(FrameKind::StreamEnd, 1)).await;
    let message = raw.next_of(FrameKind::StreamMessage).await;
    let total: crate::streams::Total = prost::Message::decode(message.body).expect("a total");
    assert_eq!(total.count, 0, "the body was not taken for a message");
    assert_eq!(status(&raw.next_of(FrameKind::StreamEnd).await).0, Code::Ok);
}

#[tokio::test]
async fn a_refused_stream_ends_with_the_refused_flag() {
    let server = common::serve_with(|b| {
        b.add_service(crate::streams::StreamsServer::new(crate::streams::StreamService::default()))
            .max_concurrent_calls(1)
    })
    .await;
    let mut raw = RawClient::connect(server.addr).await;
    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Sum"));
    raw.send(&open).await;
    open.call_id = 2;
    raw.send(&open).await;
    let mut of_call = Vec::new();
    let end = loop {
        let frame = raw.next().await.expect("frames").expect("open");
        if frame.call_id == 2 {
            of_call.push(frame.kind);
        }
        if frame.kind == FrameKind::StreamEnd {
            break frame;
        }
    };
    assert_eq!(end.call_id, 2);
    assert_eq!(of_call, [FrameKind::StreamEnd], "a refused stream is never accepted");
    assert_eq!(status(&end).0, Code::ResourceExhausted);
    assert_ne!(end.flags & flags::REFUSED, 0);
}

#[tokio::test]
async fn a_stream_accept_from_a_client_is_a_violation() {
    let server = common::serve().await;
    let (code, message) = goaway_for(&server, &[Frame::new(FrameKind::StreamAccept, 1)]).await;
    assert_eq!(code, Code::Internal);
    assert!(message.contains("only servers send"), "{message}");
    canary(&server).await;
}

/// The server promises `STREAM_ACCEPT`s in its `SETTINGS`, sends one first for a stream it
/// runs, and none for a stream it does not (§8.1).
#[tokio::test]
async fn a_stream_is_accepted_before_anything_else_of_it_and_only_if_it_runs() {
    let server = common::serve_with(|b| {
        b.add_service(crate::streams::StreamsServer::new(crate::streams::StreamService::default()))
    })
    .await;
    let mut raw = RawClient::connect(server.addr).await;
    let settings = raw.next_of(FrameKind::Settings).await;
    assert_eq!(settings.header.stream_accepts, Some(1));

    let mut open = Frame::new(FrameKind::StreamOpen, 1);
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/Sum"));
    raw.send(&open).await;
    raw.send(&Frame::new(FrameKind::StreamEnd, 1)).await;
    let mut of_call = Vec::new();
    while of_call.last() != Some(&FrameKind::StreamEnd) {
        let frame = raw.next().await.expect("frames").expect("open");
        if frame.call_id == 1 {
            of_call.push(frame.kind);
        }
    }
    assert_eq!(of_call, [FrameKind::StreamAccept, FrameKind::StreamMessage, FrameKind::StreamEnd]);

    open.call_id = 2;
    open.header.method = Some(Bytes::from_static(b"/test.v1.Streams/NoSuchMethod"));
    raw.send(&open).await;
    let end = raw.next().await.expect("frames").expect("open");
    assert_eq!((end.kind, end.call_id), (FrameKind::StreamEnd, 2), "no STREAM_ACCEPT first");
    assert_eq!(status(&end).0, Code::Unimplemented);
}
