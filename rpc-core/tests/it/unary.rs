//! Unary calls over a real socket: results, statuses, metadata, failures of one call.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use rpc_core::codec::ProstCodec;
use rpc_core::{Channel, Code, ServerContext, Status};

use crate::common::{self, Echo, Empty, Fail, TestClient};

#[tokio::test]
async fn echo_returns_the_request() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let payload = Bytes::from_static(b"hello over the wire");
    let reply = client.echo(Echo { payload: payload.clone() }).await.expect("echo");
    assert_eq!(reply.payload, payload);
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_travels_both_ways() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let response = client
        .echo(Echo::default())
        .metadata("x-echo", Bytes::from_static(&[0, 159, 146, 150]))
        .full()
        .await
        .expect("echo");
    assert_eq!(response.metadata().get("x-echo").map(|v| v.as_ref()), Some(&[0, 159, 146, 150][..]));
    server.shutdown().await;
}

#[tokio::test]
async fn a_metadata_key_with_capitals_is_sent_lowercased_and_found_in_any_case() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let response = client
        .echo(Echo::default())
        .metadata("X-Echo", Bytes::from_static(b"caps"))
        .full()
        .await
        .expect("a key with capitals does not panic");
    // The server looked it up as `x-echo` and answered with it.
    assert_eq!(response.metadata().get_str("x-echo"), Some("caps"));
    assert_eq!(response.metadata().get_str("X-ECHO"), Some("caps"));
    assert_eq!(response.metadata().iter().next().map(|(k, _)| k.as_str()), Some("x-echo"));
    server.shutdown().await;
}

#[tokio::test]
async fn handler_status_reaches_the_caller_with_code_message_and_metadata() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let status = client
        .fail(Fail { code: Code::NotFound as u32, message: "no user 42".into() })
        .await
        .expect_err("fails");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no user 42");
    assert_eq!(status.metadata().get_str("x-detail"), Some("yes"));
    server.shutdown().await;
}

#[tokio::test]
async fn every_status_code_round_trips() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    for code in 1..=16 {
        let status = client.fail(Fail { code, message: format!("code {code}") }).await.expect_err("fails");
        assert_eq!(status.code().as_u32(), code);
        assert_eq!(status.message(), format!("code {code}"));
    }
    server.shutdown().await;
}

/// A service the test server does not mount, sharing its package.
#[rpc_core::service(package = "test.v1")]
pub trait Missing {
    async fn nothing(&self, ctx: &mut ServerContext, request: Empty) -> Result<Empty, Status>;
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    let server = common::serve().await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let status = MissingClient::new(channel.clone()).nothing(Empty {}).await.expect_err("unknown");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("unknown service test.v1.Missing"), "{status}");
    // The connection is fine afterwards.
    TestClient::new(channel).echo(Echo::default()).await.expect("echo after");
    server.shutdown().await;
}

#[tokio::test]
async fn handler_panic_is_internal_and_the_next_call_succeeds() {
    let server = common::serve().await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    let status = client.panic(Empty {}).await.expect_err("panics");
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("panicked"), "{status}");
    let reply = client.echo(Echo { payload: Bytes::from_static(b"still here") }).await.expect("next call");
    assert_eq!(reply.payload.as_ref(), b"still here");
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_method_of_a_known_service_is_unimplemented_and_says_so() {
    let server = common::serve().await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let status = channel
        .unary::<Empty, Empty, ProstCodec>("/test.v1.Test/Nope", Empty {})
        .await
        .expect_err("unknown method");
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("service test.v1.Test has no method /test.v1.Test/Nope"), "{status}");
    server.shutdown().await;
}

/// A message whose field 1 is a varint: the wrong wire type for `Echo.payload`.
#[derive(Clone, PartialEq, prost::Message)]
struct NotAnEcho {
    #[prost(uint64, tag = "1")]
    number: u64,
}

#[tokio::test]
async fn request_that_does_not_decode_is_invalid_argument() {
    let server = common::serve().await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let status = channel
        .unary::<NotAnEcho, Echo, ProstCodec>("/test.v1.Test/Echo", NotAnEcho { number: 5 })
        .await
        .expect_err("does not decode");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("does not decode"), "{status}");
    server.shutdown().await;
}

#[tokio::test]
async fn response_that_does_not_decode_is_internal_on_the_client() {
    let server = common::serve().await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let status = channel
        .unary::<Echo, NotAnEcho, ProstCodec>(
            "/test.v1.Test/Echo",
            Echo { payload: Bytes::from_static(b"x") },
        )
        .await
        .expect_err("does not decode");
    assert_eq!(status.code(), Code::Internal);
    server.shutdown().await;
}

#[tokio::test]
async fn clones_of_a_channel_share_one_connection() {
    let server = common::serve().await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    let a = TestClient::new(channel.clone());
    let b = TestClient::new(channel);
    a.sleep(common::Sleep { id: 1, millis: 0 }).await.expect("a");
    b.sleep(common::Sleep { id: 2, millis: 0 }).await.expect("b");
    assert_eq!(server.probe.peers.lock().expect("lock").len(), 1);
    assert_eq!(server.probe.finished.load(Ordering::SeqCst), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn service_name_constants_follow_the_package() {
    assert_eq!(TestClient::SERVICE_NAME, "test.v1.Test");
    assert_eq!(common::TestServer::<common::TestService>::SERVICE_NAME, "test.v1.Test");
}

/// A codec that panics decoding: user code outside the handler.
struct PanicOnDecode;

impl rpc_core::codec::Codec<Empty> for PanicOnDecode {
    type Error = std::io::Error;

    fn encoded_len(_: &Empty) -> usize {
        0
    }

    fn encode(_: &Empty, _: &mut bytes::BytesMut) {}

    fn decode(_: Bytes) -> Result<Empty, Self::Error> {
        panic!("the codec panicked decoding, on purpose")
    }
}

/// A codec that panics encoding a response: user code outside the handler.
struct PanicOnEncode;

impl rpc_core::codec::Codec<Empty> for PanicOnEncode {
    type Error = std::io::Error;

    fn encoded_len(_: &Empty) -> usize {
        1
    }

    fn encode(_: &Empty, _: &mut bytes::BytesMut) {
        panic!("the codec panicked encoding, on purpose")
    }

    fn decode(_: Bytes) -> Result<Empty, Self::Error> {
        Ok(Empty {})
    }
}

/// A service written by hand against the `Service` trait, using the panicking codecs:
/// `Decode` panics decoding its request; `Encode` and `EncodeLater` panic encoding their
/// response, the first answering at once, the second after waiting: the panic is caught
/// wherever the encoding runs.
struct HandWritten;

impl rpc_core::codegen::Service for HandWritten {
    fn descriptor(&self) -> &'static rpc_core::method::ServiceDescriptor {
        use rpc_core::method::{MethodDescriptor, MethodKind, ServiceDescriptor};
        static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
            name: "test.v1.HandWritten",
            methods: &[
                MethodDescriptor {
                    name: "Decode",
                    path: "/test.v1.HandWritten/Decode",
                    kind: MethodKind::Unary,
                },
                MethodDescriptor {
                    name: "Encode",
                    path: "/test.v1.HandWritten/Encode",
                    kind: MethodKind::Unary,
                },
                MethodDescriptor {
                    name: "EncodeLater",
                    path: "/test.v1.HandWritten/EncodeLater",
                    kind: MethodKind::Unary,
                },
            ],
        };
        &DESCRIPTOR
    }

    fn call(&self, method: usize, call: rpc_core::codegen::ServerCall) -> rpc_core::codegen::Spawned {
        match method {
            0 => call.spawn_unary::<Empty, Empty, PanicOnDecode, _, _>(|ctx, request| async move {
                (ctx, Ok(request))
            }),
            1 => call.spawn_unary::<Empty, Empty, PanicOnEncode, _, _>(|ctx, request| async move {
                (ctx, Ok(request))
            }),
            _ => call.spawn_unary::<Empty, Empty, PanicOnEncode, _, _>(|ctx, request| async move {
                tokio::task::yield_now().await;
                (ctx, Ok(request))
            }),
        }
    }
}

#[tokio::test]
async fn a_codec_panic_fails_only_its_call_and_the_connection_lives_on() {
    let server = common::serve_with(|b| b.add_service(HandWritten)).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    for (method, says) in [
        ("/test.v1.HandWritten/Decode", "decoding the request of /test.v1.HandWritten/Decode panicked"),
        ("/test.v1.HandWritten/Encode", "encoding the response of /test.v1.HandWritten/Encode panicked"),
        (
            "/test.v1.HandWritten/EncodeLater",
            "encoding the response of /test.v1.HandWritten/EncodeLater panicked",
        ),
    ] {
        let status = channel
            .unary::<Empty, Empty, ProstCodec>(method, Empty {})
            .await
            .expect_err("the codec panicked");
        assert_eq!(status.code(), Code::Internal, "{method}");
        assert!(status.message().contains(says), "{method}: {status}");
        TestClient::new(channel.clone()).echo(Echo::default()).await.expect("the connection lives on");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_url_for_a_target_fails_at_connect_saying_what_to_write() {
    let server = common::serve().await;
    let url = format!("http://{}", server.addr);
    let status = Channel::connect(url).await.expect_err("a URL is not an address");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("without a scheme such as http://"), "{status}");
    let source = std::error::Error::source(&status).expect("the address error is kept");
    assert!(source.to_string().contains("http://"), "{source}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_connect_keeps_the_io_error_as_its_source() {
    // A port nobody listens on: bound, then closed.
    let addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let status = Channel::connect(addr).await.expect_err("nobody listens");
    assert_eq!(status.code(), Code::Unavailable);
    let source = std::error::Error::source(&status).expect("the cause is kept");
    let io = source.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
}
