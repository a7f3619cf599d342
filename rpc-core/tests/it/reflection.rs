//! The reflection service over real sockets, and calls made with a method named at run time
//! and bodies encoded elsewhere.

use bytes::Bytes;
use prost::Message;
use rpc_core::codec::BytesCodec;
use rpc_core::interceptor::{ServerInterceptor, ServerNext};
use rpc_core::method::{MethodKind, MethodName};
use rpc_core::reflection::{FileDescriptorsRequest, ListServicesRequest, ReflectionClient};
use rpc_core::{Channel, Code, ServerContext, Status};

use crate::common::{self, Echo};
use crate::streams::{Item, StreamService, StreamsServer};

#[tokio::test]
async fn reflection_lists_every_mounted_service_with_its_methods() {
    // Reflection is mounted first: it still lists the services mounted after it.
    let streams = StreamsServer::new(StreamService::default());
    let server = common::serve_with(|b| b.reflection().add_service(streams)).await;
    let reflection = ReflectionClient::new(Channel::connect(server.addr).await.expect("connect"));
    let services = reflection.list_services(ListServicesRequest {}).await.expect("list").services;
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["test.v1.Test", "rpc.reflection.v1.Reflection", "test.v1.Streams", "grpc.health.v1.Health"]
    );
    let test = &services[0];
    assert!(!test.has_descriptor, "a service declared as a trait has no protobuf schema");
    let echo = test.methods.iter().find(|m| m.name == "Echo").expect("Echo is listed");
    assert_eq!(echo.kind(), MethodKind::Unary);
    let kinds: Vec<(&str, MethodKind)> =
        services[2].methods.iter().map(|m| (m.name.as_str(), m.kind())).collect();
    assert_eq!(
        kinds[..3],
        [
            ("Count", MethodKind::ServerStreaming),
            ("Sum", MethodKind::ClientStreaming),
            ("Echo", MethodKind::BidiStreaming)
        ]
    );
    // Only services from .proto files have files; asking for another is NOT_FOUND, by name.
    let err = reflection
        .file_descriptors(FileDescriptorsRequest { symbols: vec!["test.v1.Test".into()] })
        .await
        .expect_err("no schema");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("test.v1.Test"), "{}", err.message());
    let all = reflection.file_descriptors(FileDescriptorsRequest::default()).await.expect("all files");
    assert!(all.file.is_empty(), "no service here has a schema");
    server.shutdown().await;
}

/// Lets through only calls that carry `x-token`.
struct NeedsToken;

impl ServerInterceptor for NeedsToken {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        if ctx.metadata().contains_key("x-token") {
            next.run(ctx).await
        } else {
            Err(Status::unauthenticated("no token"))
        }
    }
}

#[tokio::test]
async fn reflection_calls_go_through_the_servers_interceptors() {
    let server = common::serve_with(|b| b.interceptor(NeedsToken).reflection()).await;
    let reflection = ReflectionClient::new(Channel::connect(server.addr).await.expect("connect"));
    let err = reflection.list_services(ListServicesRequest {}).await.expect_err("guarded");
    assert_eq!(err.code(), Code::Unauthenticated);
    let listed = reflection.list_services(ListServicesRequest {}).metadata("x-token", "t").await;
    assert!(listed.is_ok(), "{listed:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_method_named_at_run_time_carries_bodies_encoded_elsewhere() {
    let streams = StreamsServer::new(StreamService::default());
    let server = common::serve_with(|b| b.add_service(streams)).await;
    let channel = Channel::connect(server.addr).await.expect("connect");
    // The name is made at run time and shared by the calls made with it.
    let method = MethodName::from(format!("/{}/{}", "test.v1.Test", "Echo"));
    let body = Bytes::from(Echo { payload: b"ping".to_vec().into() }.encode_to_vec());
    for _ in 0..3 {
        let answer: Bytes = channel.unary::<_, _, BytesCodec>(&method, body.clone()).await.expect("echoed");
        assert_eq!(Echo::decode(answer).expect("an Echo").payload, &b"ping"[..]);
    }
    // A bidirectional stream of raw bodies.
    let chat = MethodName::from(String::from("/test.v1.Streams/Echo"));
    let (mut tx, mut rx) = channel.bidi_streaming::<Bytes, Bytes, BytesCodec>(chat).await.expect("opened");
    let item = Bytes::from(Item { n: 7, payload: Bytes::new() }.encode_to_vec());
    tx.send(item).await.expect("sent");
    drop(tx);
    let mut answers = Vec::new();
    while let Some(answer) = rx.message().await.expect("no error") {
        answers.push(Item::decode(answer).expect("an Item").n);
    }
    assert_eq!(answers, [7]);
    // An unknown name made at run time is refused like any other.
    let nowhere = MethodName::from(String::from("/test.v1.Test/Nowhere"));
    let err = channel.unary::<_, Bytes, BytesCodec>(nowhere, body).await.expect_err("unknown");
    assert_eq!(err.code(), Code::Unimplemented);
    server.shutdown().await;
}
