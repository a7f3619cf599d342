//! Schemas from `.proto` files and from a server's reflection service, and messages through
//! JSON, against the route guide served over a loopback socket.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use prost::Message;
use rpc_core::codec::BytesCodec;
use rpc_core::method::MethodKind;
use rpc_core::{Channel, Code, Metadata, Server};
use rpc_dynamic::{Error, JsonOptions, Schema};

fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/proto")
}

fn route_guide_from_proto() -> Schema {
    let dir = proto_dir();
    Schema::from_protos(&[dir.join("route_guide.proto")], &[dir]).expect("the route guide compiles")
}

/// Serves the route guide (and a trait-declared health service) with reflection.
async fn serve() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Server::builder().add_service(examples::route_guide::Guide::server()).reflection();
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

#[test]
fn a_proto_file_gives_every_method_with_its_shape() {
    let schema = route_guide_from_proto();
    let kinds: Vec<(String, MethodKind)> =
        schema.methods().iter().map(|m| (m.path().to_string(), m.kind())).collect();
    assert_eq!(
        kinds,
        [
            ("/routeguide.RouteGuide/GetFeature".to_owned(), MethodKind::Unary),
            ("/routeguide.RouteGuide/ListFeatures".to_owned(), MethodKind::ServerStreaming),
            ("/routeguide.RouteGuide/RecordRoute".to_owned(), MethodKind::ClientStreaming),
            ("/routeguide.RouteGuide/RouteChat".to_owned(), MethodKind::BidiStreaming),
        ]
    );
    for name in [
        "routeguide.RouteGuide/GetFeature",
        "/routeguide.RouteGuide/GetFeature",
        "routeguide.RouteGuide.GetFeature",
    ] {
        assert_eq!(schema.method(name).expect(name).path().as_str(), "/routeguide.RouteGuide/GetFeature");
    }
}

#[test]
fn unknown_services_and_methods_are_named_with_what_there_is() {
    let schema = route_guide_from_proto();
    let err = schema.method("routeguide.RouteGuide/Nope").expect_err("no such method").to_string();
    assert!(err.contains("no method Nope") && err.contains("GetFeature, ListFeatures"), "{err}");
    let err = schema.method("nope.Nope/X").expect_err("no such service").to_string();
    assert!(err.contains("no service nope.Nope") && err.contains("routeguide.RouteGuide"), "{err}");
    let err = schema.method("GetFeature").expect_err("not a method name").to_string();
    assert!(err.contains("pkg.Service/Method"), "{err}");
}

#[test]
fn a_broken_proto_names_the_file_line_and_column() {
    let dir = std::env::temp_dir().join(format!("rpc-dynamic-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("bad.proto"), "syntax = \"proto3\";\nmessage A {\n  int32 x = 1\n}\n")
        .expect("write");
    let err = Schema::from_protos(&[dir.join("bad.proto")], &[&dir]).expect_err("syntax error");
    assert!(matches!(err, Error::Proto(_)));
    assert!(err.to_string().contains("bad.proto:4:1"), "{err}");
}

#[test]
fn json_errors_name_the_field() {
    let schema = route_guide_from_proto();
    let chat = schema.method("routeguide.RouteGuide/RouteChat").expect("RouteChat");
    let err = chat.request_from_json(r#"{"location": {"latitude": "north"}}"#).expect_err("not a number");
    assert_eq!(err.path, "location.latitude", "{err}");
    assert!(err.to_string().starts_with("at location.latitude: "), "{err}");
    let err = chat.request_from_json(r#"{"locaton": {}}"#).expect_err("a typo");
    assert!(err.to_string().contains("locaton"), "{err}");
    let err = chat.request_from_json(r#"{"message": "hi"} trailing"#).expect_err("trailing text");
    assert!(err.to_string().contains("after the message"), "{err}");
    let err = chat.request_from_json(r#"{"message": "#).expect_err("cut short");
    assert!(err.to_string().contains("EOF"), "{err}");
}

#[test]
fn json_follows_the_canonical_mapping_both_ways() {
    let schema = route_guide_from_proto();
    let record = schema.method("routeguide.RouteGuide/RecordRoute").expect("RecordRoute");
    // Either field name is accepted; integers may be strings.
    let point = record.request_from_json(r#"{"latitude": "5", "longitude": 7}"#).expect("a point");
    assert_eq!(&point[..], &[0x08, 5, 0x10, 7]);
    let summary = Bytes::from_static(&[0x08, 3, 0x18, 42]); // point_count 3, distance 42
    let canonical = record.response_to_json(summary.clone(), &JsonOptions::default()).expect("json");
    assert_eq!(canonical, r#"{"pointCount":3,"distance":42}"#);
    let options = JsonOptions { emit_defaults: true, proto_field_names: true };
    let full = record.response_to_json(summary, &options).expect("json");
    assert_eq!(full, r#"{"point_count":3,"feature_count":0,"distance":42,"elapsed_time":0}"#);
    let err = record.response_to_json(Bytes::from_static(&[0xff]), &options).expect_err("garbage");
    assert!(err.to_string().contains("routeguide.RouteSummary does not decode"), "{err}");
}

#[test]
fn the_http_annotations_are_readable() {
    let schema = route_guide_from_proto();
    let get = schema.method("routeguide.RouteGuide/GetFeature").expect("GetFeature");
    let options = get.descriptor().options();
    let http = schema.pool().get_extension_by_name("google.api.http").expect("the extension is known");
    let rule = options.get_extension(&http);
    let rule = rule.as_message().expect("an HttpRule");
    let get_path = rule.get_field_by_name("get").expect("get");
    assert_eq!(get_path.as_str(), Some("/v1/features/{latitude}/{longitude}"));
}

#[tokio::test]
async fn reflection_gives_the_same_schema_as_the_proto_file() {
    let addr = serve().await;
    let channel = Channel::connect(addr).await.expect("connect");
    let schema = Schema::from_reflection(&channel, &["routeguide.RouteGuide"], &Metadata::new())
        .await
        .expect("reflection");
    let from_proto = route_guide_from_proto();
    let paths =
        |schema: &Schema| -> Vec<String> { schema.methods().iter().map(|m| m.path().to_string()).collect() };
    assert_eq!(paths(&schema), paths(&from_proto));
    // Comments travel too (for `describe`).
    let service = schema.service("routeguide.RouteGuide").expect("service");
    let comments = service.parent_file().file_descriptor_proto().source_code_info.is_some();
    assert!(comments, "source info is kept");
    // And a call made with it works.
    let get = schema.method("routeguide.RouteGuide/GetFeature").expect("GetFeature");
    let request = get.request_from_json(r#"{"latitude": 407000000, "longitude": -744000000}"#).expect("json");
    let answer = channel.unary::<_, _, BytesCodec>(get.path(), request).await.expect("answer");
    let json = get.response_to_json(answer, &JsonOptions::default()).expect("json");
    assert_eq!(json, r#"{"name":"Landmark 0-0","location":{"latitude":407000000,"longitude":-744000000}}"#);
}

#[tokio::test]
async fn reflection_says_what_to_do_for_a_service_without_a_schema_or_a_server_without_reflection() {
    let addr = serve().await;
    let channel = Channel::connect(addr).await.expect("connect");
    let err = Schema::from_reflection(&channel, &["grpc.health.v1.Health"], &Metadata::new())
        .await
        .expect_err("no schema for a trait-declared service");
    assert!(err.to_string().contains("give its .proto file"), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let bare = listener.local_addr().expect("addr");
    tokio::spawn(Server::builder().serve_with_listener(listener, std::future::pending()));
    let channel = Channel::connect(bare).await.expect("connect");
    let err = Schema::from_reflection(&channel, &["x.Y"], &Metadata::new()).await.expect_err("no reflection");
    assert!(err.to_string().contains("does not serve reflection"), "{err}");
    assert!(err.status().is_none());
    let err = Error::Status(rpc_core::Status::unavailable("down"));
    assert_eq!(err.to_status().code(), Code::Unavailable);
}

#[test]
fn the_reflection_proto_matches_the_messages_rpc_core_sends() {
    use rpc_core::reflection::{ListServicesResponse, MethodInfo, ServiceInfo};

    let dir = proto_dir();
    // The reflection file is built in: no include path holds it.
    let schema = Schema::from_protos(&["rpc/reflection/v1/reflection.proto"], &[dir]).expect("compiles");
    let list = schema.method("rpc.reflection.v1.Reflection/ListServices").expect("ListServices");
    let sent = ListServicesResponse {
        services: vec![ServiceInfo {
            name: "a.B".into(),
            methods: vec![MethodInfo { name: "C".into(), client_streaming: true, server_streaming: false }],
            has_descriptor: true,
        }],
    };
    let json =
        list.response_to_json(Bytes::from(sent.encode_to_vec()), &JsonOptions::default()).expect("json");
    assert_eq!(
        json,
        r#"{"services":[{"name":"a.B","methods":[{"name":"C","clientStreaming":true}],"hasDescriptor":true}]}"#
    );
}
