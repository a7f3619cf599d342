//! Every service of the corpus, served and called over a loopback socket; and services
//! declared once in a `.proto` and once with `#[service]` calling each other.

use std::collections::HashMap;
use std::net::SocketAddr;

use proto_corpus::acme::billing::v1::{Billing, BillingClient, BillingServer, Invoice};
use proto_corpus::acme::common::v1::{Currency, Money};
use proto_corpus::grpc::health::v1::health_check_response::ServingStatus;
use proto_corpus::grpc::health::v1::{
    Health, HealthCheckRequest, HealthCheckResponse, HealthClient, HealthServer,
};
use proto_corpus::helloworld::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
use proto_corpus::kitchen::sink::everything::{Choice, Color, Inner};
use proto_corpus::kitchen::sink::{
    Everything, Mirror, MirrorClient, MirrorServer, Ping, Sink, SinkClient, SinkServer,
};
use proto_corpus::legacy::{Account, Directory, DirectoryClient, DirectoryServer, Lookup};
use proto_corpus::routeguide::{
    Feature, Point, Rectangle, RouteGuide, RouteGuideClient, RouteGuideServer, RouteNote, RouteSummary,
};
use rpc_core::codegen::Service;
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender, Streaming};

/// Serves what `configure` mounts on a loopback port.
async fn serve(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(configure(Server::builder()).serve_with_listener(listener, std::future::pending()));
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::connect(addr).await.expect("connect")
}

// ---- helloworld: one method of each kind ----

struct ProtoGreeter;

impl Greeter for ProtoGreeter {
    async fn say_hello(&self, _ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply { message: format!("Hello {}", request.name) })
    }

    async fn lots_of_replies(
        &self,
        _ctx: &mut ServerContext,
        request: HelloRequest,
        mut responses: StreamSender<HelloReply>,
    ) -> Result<(), Status> {
        for letter in request.name.chars() {
            responses.send(HelloReply { message: letter.to_string() }).await?;
        }
        Ok(())
    }

    async fn lots_of_greetings(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<HelloRequest>,
    ) -> Result<HelloReply, Status> {
        let mut names = Vec::new();
        while let Some(request) = requests.message().await? {
            names.push(request.name);
        }
        Ok(HelloReply { message: format!("Hello {}", names.join(" and ")) })
    }

    async fn bidi_hello(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<HelloRequest>,
        mut responses: StreamSender<HelloReply>,
    ) -> Result<(), Status> {
        while let Some(request) = requests.message().await? {
            responses.send(HelloReply { message: format!("Hello {}", request.name) }).await?;
        }
        Ok(())
    }
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

#[tokio::test]
async fn helloworld_every_kind_of_method() {
    let addr = serve(|b| b.add_service(GreeterServer::new(ProtoGreeter))).await;
    let client = GreeterClient::new(channel(addr).await);
    assert_eq!(GreeterClient::SERVICE_NAME, "helloworld.Greeter");

    assert_eq!(client.say_hello(hello("proto")).await.expect("unary").message, "Hello proto");

    let mut letters = client.lots_of_replies(hello("abc")).await.expect("open");
    let mut got = String::new();
    while let Some(reply) = letters.message().await.expect("ok") {
        got.push_str(&reply.message);
    }
    assert_eq!(got, "abc");

    let (mut names, reply) = client.lots_of_greetings().await.expect("open");
    names.send(hello("Ann")).await.expect("send");
    names.send(hello("Bob")).await.expect("send");
    names.close();
    assert_eq!(reply.await.expect("reply").message, "Hello Ann and Bob");

    let (mut tx, mut rx) = client.bidi_hello().await.expect("open");
    tx.send(hello("Cy")).await.expect("send");
    assert_eq!(rx.message().await.expect("ok").expect("reply").message, "Hello Cy");
    drop(tx);
    assert!(rx.message().await.expect("clean end").is_none());
}

// ---- the same service declared with the macro: wire-compatible both ways ----

/// `helloworld.Greeter` again, written as a Rust trait over the proto's messages.
#[rpc_core::service(package = "helloworld", name = "Greeter")]
pub trait MacroGreeter {
    async fn say_hello(&self, ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status>;
    async fn lots_of_replies(
        &self,
        ctx: &mut ServerContext,
        request: HelloRequest,
        responses: StreamSender<HelloReply>,
    ) -> Result<(), Status>;
    async fn lots_of_greetings(
        &self,
        ctx: &mut ServerContext,
        requests: Streaming<HelloRequest>,
    ) -> Result<HelloReply, Status>;
    async fn bidi_hello(
        &self,
        ctx: &mut ServerContext,
        requests: Streaming<HelloRequest>,
        responses: StreamSender<HelloReply>,
    ) -> Result<(), Status>;
}

struct RustGreeter;

impl MacroGreeter for RustGreeter {
    async fn say_hello(&self, _ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply { message: format!("Hi {} (from the macro)", request.name) })
    }

    async fn lots_of_replies(
        &self,
        _ctx: &mut ServerContext,
        request: HelloRequest,
        mut responses: StreamSender<HelloReply>,
    ) -> Result<(), Status> {
        responses.send(HelloReply { message: request.name }).await
    }

    async fn lots_of_greetings(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<HelloRequest>,
    ) -> Result<HelloReply, Status> {
        let mut count = 0;
        while requests.message().await?.is_some() {
            count += 1;
        }
        Ok(HelloReply { message: count.to_string() })
    }

    async fn bidi_hello(
        &self,
        _ctx: &mut ServerContext,
        _requests: Streaming<HelloRequest>,
        _responses: StreamSender<HelloReply>,
    ) -> Result<(), Status> {
        Ok(())
    }
}

#[tokio::test]
async fn a_macro_client_calls_a_proto_server() {
    let addr = serve(|b| b.add_service(GreeterServer::new(ProtoGreeter))).await;
    let client = MacroGreeterClient::new(channel(addr).await);
    assert_eq!(MacroGreeterClient::SERVICE_NAME, GreeterClient::SERVICE_NAME);
    assert_eq!(client.say_hello(hello("macro")).await.expect("call").message, "Hello macro");
    let mut letters = client.lots_of_replies(hello("xy")).await.expect("open");
    assert_eq!(letters.message().await.expect("ok").expect("reply").message, "x");
}

#[tokio::test]
async fn a_proto_client_calls_a_macro_server() {
    let addr = serve(|b| b.add_service(MacroGreeterServer::new(RustGreeter))).await;
    let client = GreeterClient::new(channel(addr).await);
    assert_eq!(client.say_hello(hello("proto")).await.expect("call").message, "Hi proto (from the macro)");
    let (mut names, reply) = client.lots_of_greetings().await.expect("open");
    for name in ["a", "b", "c"] {
        names.send(hello(name)).await.expect("send");
    }
    names.close();
    assert_eq!(reply.await.expect("reply").message, "3");
}

#[test]
fn both_declarations_route_the_same_method_names() {
    let proto = GreeterServer::new(ProtoGreeter);
    let rust = MacroGreeterServer::new(RustGreeter);
    let paths = |d: &'static rpc_core::method::ServiceDescriptor| {
        d.methods.iter().map(|m| (m.path, m.kind)).collect::<Vec<_>>()
    };
    assert_eq!(paths(proto.descriptor()), paths(rust.descriptor()));
    assert_eq!(proto.descriptor().methods[0].path, "/helloworld.Greeter/SayHello");
}

// ---- acme.billing.v1: messages from another package, well-known types ----

struct Biller;

impl Billing for Biller {
    async fn charge(&self, _ctx: &mut ServerContext, request: Money) -> Result<Invoice, Status> {
        Ok(Invoice {
            id: "inv-1".into(),
            total: Some(request),
            issued_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
        })
    }

    async fn quote(&self, _ctx: &mut ServerContext, request: Money) -> Result<Money, Status> {
        Ok(request)
    }
}

#[tokio::test]
async fn billing_uses_messages_of_another_package() {
    let addr = serve(|b| b.add_service(BillingServer::new(Biller))).await;
    let client = BillingClient::new(channel(addr).await);
    assert_eq!(BillingClient::SERVICE_NAME, "acme.billing.v1.Billing");
    let money = Money { currency: Currency::Eur as i32, minor_units: 1250 };
    let invoice = client.charge(money).await.expect("charge");
    assert_eq!(invoice.total, Some(money));
    assert_eq!(invoice.issued_at.map(|t| t.seconds), Some(1_700_000_000));
    assert_eq!(client.quote(money).await.expect("quote"), money);
}

// ---- legacy: proto2 ----

struct Accounts;

impl Directory for Accounts {
    async fn find(&self, _ctx: &mut ServerContext, request: Lookup) -> Result<Account, Status> {
        if request.login == "root" {
            Ok(Account { login: request.login, age: None, nickname: None, roles: vec!["admin".into()] })
        } else {
            Err(Status::not_found(format!("no account {}", request.login)))
        }
    }
}

#[tokio::test]
async fn reflection_serves_the_files_of_proto_services_with_their_imports() {
    use rpc_core::prost::Message;
    use rpc_core::reflection::{FileDescriptorsRequest, ListServicesRequest, ReflectionClient};

    let addr = serve(|b| b.add_service(BillingServer::new(Biller)).reflection()).await;
    let reflection = ReflectionClient::new(channel(addr).await);
    let services = reflection.list_services(ListServicesRequest {}).await.expect("list").services;
    let billing = services.iter().find(|s| s.name == "acme.billing.v1.Billing").expect("listed");
    assert!(billing.has_descriptor, "a service from a .proto file has its schema");
    let asked = FileDescriptorsRequest { symbols: vec!["acme.billing.v1.Billing".into()] };
    let files = reflection.file_descriptors(asked).await.expect("files");
    // The body is a FileDescriptorSet: each file after the files it imports.
    let set = prost_types::FileDescriptorSet::decode(files.encode_to_vec().as_slice()).expect("a set");
    let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
    assert_eq!(names.last(), Some(&"acme/billing/v1/billing.proto"), "{names:?}");
    for import in ["acme/common/v1/money.proto", "google/protobuf/timestamp.proto"] {
        assert!(names.contains(&import), "{import} in {names:?}");
    }
    let service = &set.file.last().expect("billing.proto").service[0];
    assert_eq!(service.name(), "Billing");
    assert!(!service.method.is_empty());
}

#[tokio::test]
async fn proto2_messages_keep_their_defaults() {
    let addr = serve(|b| b.add_service(DirectoryServer::new(Accounts))).await;
    let client = DirectoryClient::new(channel(addr).await);
    let account = client.find(Lookup { login: "root".into() }).await.expect("find");
    assert_eq!(account.age(), 18, "proto2 default");
    assert_eq!(account.nickname(), "anonymous");
    assert_eq!(account.roles, ["admin"]);
    let missing = client.find(Lookup { login: "nobody".into() }).await.expect_err("not found");
    assert_eq!(missing.code(), Code::NotFound);
}

// ---- grpc.health.v1: a published contract ----

struct Healthy;

impl Health for Healthy {
    async fn check(
        &self,
        _ctx: &mut ServerContext,
        request: HealthCheckRequest,
    ) -> Result<HealthCheckResponse, Status> {
        match request.service.as_str() {
            "" | "helloworld.Greeter" => Ok(HealthCheckResponse { status: ServingStatus::Serving as i32 }),
            other => Err(Status::not_found(format!("unknown service {other}"))),
        }
    }

    async fn watch(
        &self,
        _ctx: &mut ServerContext,
        _request: HealthCheckRequest,
        mut responses: StreamSender<HealthCheckResponse>,
    ) -> Result<(), Status> {
        for status in [ServingStatus::Serving, ServingStatus::NotServing] {
            responses.send(HealthCheckResponse { status: status as i32 }).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_standard_health_service_checks_and_watches() {
    let addr = serve(|b| b.add_service(HealthServer::new(Healthy))).await;
    let client = HealthClient::new(channel(addr).await);
    assert_eq!(HealthClient::SERVICE_NAME, "grpc.health.v1.Health");
    let serving = client.check(HealthCheckRequest { service: String::new() }).await.expect("check");
    assert_eq!(serving.status(), ServingStatus::Serving);
    let unknown = client.check(HealthCheckRequest { service: "nope".into() }).await.expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let mut changes = client.watch(HealthCheckRequest::default()).await.expect("watch");
    let mut seen = Vec::new();
    while let Some(change) = changes.message().await.expect("ok") {
        seen.push(change.status());
    }
    assert_eq!(seen, [ServingStatus::Serving, ServingStatus::NotServing]);
}

// ---- routeguide: a published contract with every kind ----

struct Guide;

impl RouteGuide for Guide {
    async fn get_feature(&self, _ctx: &mut ServerContext, request: Point) -> Result<Feature, Status> {
        Ok(Feature { name: format!("{},{}", request.latitude, request.longitude), location: Some(request) })
    }

    async fn list_features(
        &self,
        _ctx: &mut ServerContext,
        request: Rectangle,
        mut responses: StreamSender<Feature>,
    ) -> Result<(), Status> {
        for point in [request.lo, request.hi].into_iter().flatten() {
            responses.send(Feature { name: "corner".into(), location: Some(point) }).await?;
        }
        Ok(())
    }

    async fn record_route(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<Point>,
    ) -> Result<RouteSummary, Status> {
        let mut summary = RouteSummary::default();
        while requests.message().await?.is_some() {
            summary.point_count += 1;
        }
        Ok(summary)
    }

    async fn route_chat(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<RouteNote>,
        mut responses: StreamSender<RouteNote>,
    ) -> Result<(), Status> {
        while let Some(note) = requests.message().await? {
            responses.send(note).await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn route_guide_every_kind_of_method() {
    let addr = serve(|b| b.add_service(RouteGuideServer::new(Guide))).await;
    let client = RouteGuideClient::new(channel(addr).await);
    let point = Point { latitude: 1, longitude: 2 };
    assert_eq!(client.get_feature(point).await.expect("get").name, "1,2");
    let mut corners =
        client.list_features(Rectangle { lo: Some(point), hi: Some(point) }).await.expect("list");
    let mut count = 0;
    while corners.message().await.expect("ok").is_some() {
        count += 1;
    }
    assert_eq!(count, 2);
    let (mut route, summary) = client.record_route().await.expect("record");
    for _ in 0..5 {
        route.send(point).await.expect("send");
    }
    route.close();
    assert_eq!(summary.await.expect("summary").point_count, 5);
    let (mut tx, mut rx) = client.route_chat().await.expect("chat");
    tx.send(RouteNote { location: Some(point), message: "hi".into() }).await.expect("send");
    assert_eq!(rx.message().await.expect("ok").expect("note").message, "hi");
}

// ---- kitchen.sink: every message shape, 24 methods, keyword names, two services ----

struct Everyone;

macro_rules! pings {
    ($($name:ident),*) => {
        $(
            async fn $name(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
                Ok(Ping { n: request.n + 1 })
            }
        )*
    };
}

impl Sink for Everyone {
    async fn echo(&self, _ctx: &mut ServerContext, request: Everything) -> Result<Everything, Status> {
        Ok(request)
    }

    async fn r#type(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
        Ok(Ping { n: request.n + 100 })
    }

    async fn r#match(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
        Ok(Ping { n: request.n + 200 })
    }

    async fn r#async(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
        Ok(Ping { n: request.n + 300 })
    }

    async fn nothing(&self, _ctx: &mut ServerContext, _request: ()) -> Result<(), Status> {
        Ok(())
    }

    async fn now(&self, _ctx: &mut ServerContext, _request: ()) -> Result<prost_types::Timestamp, Status> {
        Ok(prost_types::Timestamp { seconds: 42, nanos: 7 })
    }

    pings!(m07, m08, m09, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, new);

    async fn count(
        &self,
        _ctx: &mut ServerContext,
        request: Ping,
        mut responses: StreamSender<Ping>,
    ) -> Result<(), Status> {
        for n in 0..request.n {
            responses.send(Ping { n }).await?;
        }
        Ok(())
    }

    async fn total(&self, _ctx: &mut ServerContext, mut requests: Streaming<Ping>) -> Result<Ping, Status> {
        let mut total = 0;
        while let Some(ping) = requests.message().await? {
            total += ping.n;
        }
        Ok(Ping { n: total })
    }

    async fn relay(
        &self,
        _ctx: &mut ServerContext,
        mut requests: Streaming<Ping>,
        mut responses: StreamSender<Ping>,
    ) -> Result<(), Status> {
        while let Some(ping) = requests.message().await? {
            responses.send(ping).await?;
        }
        Ok(())
    }
}

impl Mirror for Everyone {
    async fn reflect(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
        Ok(request)
    }
}

fn everything() -> Everything {
    Everything {
        color: Color::Green as i32,
        inner: Some(Inner { label: "inner".into(), values: vec![1, 2, 3] }),
        inners: vec![Inner::default(), Inner { label: "second".into(), values: vec![] }],
        counts: HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]),
        by_id: HashMap::from([(7, Inner { label: "seven".into(), values: vec![7] })]),
        maybe: Some("present".into()),
        blob: vec![0, 255, 1],
        choice: Some(Choice::Nested(Inner { label: "chosen".into(), values: vec![] })),
        r#type: "keyword".into(),
        r#match: true,
        r#async: -5,
        at: Some(prost_types::Timestamp { seconds: 1, nanos: 2 }),
        took: Some(prost_types::Duration { seconds: 3, nanos: 4 }),
        any: Some(prost_types::Any {
            type_url: "type.googleapis.com/kitchen.sink.Ping".into(),
            value: vec![8, 1],
        }),
        document: Some(prost_types::Struct {
            fields: [(
                "k".to_owned(),
                prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(1.5)) },
            )]
            .into(),
        }),
        wrapped: Some(9),
        value: Some(prost_types::Value { kind: Some(prost_types::value::Kind::StringValue("v".into())) }),
    }
}

#[tokio::test]
async fn the_kitchen_sink_round_trips_every_field_and_calls_keyword_methods() {
    let addr =
        serve(|b| b.add_service(SinkServer::new(Everyone)).add_service(MirrorServer::new(Everyone))).await;
    let channel = channel(addr).await;
    let sink = SinkClient::new(channel.clone());
    assert_eq!(sink.echo(everything()).await.expect("echo"), everything());
    assert_eq!(sink.r#type(Ping { n: 1 }).await.expect("type").n, 101);
    assert_eq!(sink.r#match(Ping { n: 1 }).await.expect("match").n, 201);
    assert_eq!(sink.r#async(Ping { n: 1 }).await.expect("async").n, 301);
    sink.nothing(()).await.expect("empty in, empty out");
    assert_eq!(sink.now(()).await.expect("now").seconds, 42);
    assert_eq!(sink.m20(Ping { n: 1 }).await.expect("m20").n, 2);
    assert_eq!(sink.new_(Ping { n: 1 }).await.expect("a method named New").n, 2);

    let mut counted = sink.count(Ping { n: 3 }).await.expect("count");
    let mut got = Vec::new();
    while let Some(ping) = counted.message().await.expect("ok") {
        got.push(ping.n);
    }
    assert_eq!(got, [0, 1, 2]);

    let (mut tx, total) = sink.total().await.expect("total");
    for n in 1..=4 {
        tx.send(Ping { n }).await.expect("send");
    }
    tx.close();
    assert_eq!(total.await.expect("total").n, 10);

    // The second service of the same file, on the same server and connection.
    let mirror = MirrorClient::new(channel);
    assert_eq!(mirror.reflect(Ping { n: 5 }).await.expect("reflect").n, 5);

    assert_eq!(SinkServer::<Everyone>::new(Everyone).descriptor().methods.len(), 24);
    let paths: Vec<_> = SinkServer::new(Everyone).descriptor().methods.iter().map(|m| m.path).collect();
    for wire in [
        "/kitchen.sink.Sink/type",
        "/kitchen.sink.Sink/match",
        "/kitchen.sink.Sink/async",
        "/kitchen.sink.Sink/New",
    ] {
        assert!(paths.contains(&wire), "{wire} missing from {paths:?}");
    }
}

// ---- hostile names: prelude types, keywords, the client's own names, a service `T` ----

mod hostile_names {
    use proto_corpus::hostile::{
        Box, Future, Option, Option2, Option2Client, Option2Server, Result, Self_, Send, Status as Msg,
        String, T, T1, TClient, TServer, Vec,
    };
    use rpc_core::{ServerContext, Status, StreamSender, Streaming};

    use super::{channel, serve};

    struct Hostile;

    /// Methods answering their `Result` with `n + 1`.
    macro_rules! incrementing {
        ($($name:ident),*) => {
            $(
                async fn $name(&self, _ctx: &mut ServerContext, request: Result) -> std::result::Result<Result, Status> {
                    Ok(Result { n: request.n + 1 })
                }
            )*
        };
    }

    impl T for Hostile {
        async fn clone(
            &self,
            _ctx: &mut ServerContext,
            request: Result,
        ) -> std::result::Result<Option, Status> {
            Ok(Option { n: request.n })
        }

        async fn clone_from(
            &self,
            _ctx: &mut ServerContext,
            request: String,
        ) -> std::result::Result<Box, Status> {
            Ok(Box { n: request.n })
        }

        async fn fmt(&self, _ctx: &mut ServerContext, request: Vec) -> std::result::Result<Self_, Status> {
            Ok(Self_ { n: request.n })
        }

        async fn default(
            &self,
            _ctx: &mut ServerContext,
            request: Send,
        ) -> std::result::Result<Future, Status> {
            Ok(Future { n: request.n })
        }

        async fn poll(&self, _ctx: &mut ServerContext, request: Msg) -> std::result::Result<T1, Status> {
            Ok(T1 { n: request.n })
        }

        incrementing!(
            into_future,
            into,
            try_into,
            from,
            new,
            channel,
            borrow,
            to_owned,
            type_id,
            r#type,
            self_,
            super_,
            crate_,
            r#fn,
            ok
        );

        async fn stream(
            &self,
            _ctx: &mut ServerContext,
            mut requests: Streaming<Result>,
            mut responses: StreamSender<Option>,
        ) -> std::result::Result<(), Status> {
            while let Some(request) = requests.message().await? {
                responses.send(Option { n: request.n }).await?;
            }
            Ok(())
        }
    }

    impl Option2 for Hostile {
        async fn get(
            &self,
            _ctx: &mut ServerContext,
            request: Option,
        ) -> std::result::Result<Option, Status> {
            Ok(request)
        }
    }

    #[tokio::test]
    async fn every_hostile_name_compiles_and_calls_the_right_method() {
        let addr =
            serve(|b| b.add_service(TServer::new(Hostile)).add_service(Option2Server::new(Hostile))).await;
        let client = TClient::new(channel(addr).await);
        // The traits' own methods stay reachable on the client.
        let copy = client.clone();
        assert!(format!("{copy:?}").contains("TClient"));
        assert_eq!(client.channel().target(), copy.channel().target());

        assert_eq!(client.clone_(Result { n: 1 }).await.expect("Clone"), Option { n: 1 });
        assert_eq!(client.clone_from_(String { n: 2 }).await.expect("CloneFrom"), Box { n: 2 });
        assert_eq!(client.fmt_(Vec { n: 3 }).await.expect("Fmt"), Self_ { n: 3 });
        assert_eq!(client.default(Send { n: 4 }).await.expect("Default"), Future { n: 4 });
        assert_eq!(client.poll(Msg { n: 5 }).await.expect("Poll"), T1 { n: 5 });
        let calls = [
            client.into_future(Result { n: 0 }),
            client.into_(Result { n: 0 }),
            client.try_into_(Result { n: 0 }),
            client.from_(Result { n: 0 }),
            client.new_(Result { n: 0 }),
            client.channel_(Result { n: 0 }),
            client.borrow_(Result { n: 0 }),
            client.to_owned_(Result { n: 0 }),
            client.type_id_(Result { n: 0 }),
            client.r#type(Result { n: 0 }),
            client.self_(Result { n: 0 }),
            client.super_(Result { n: 0 }),
            client.crate_(Result { n: 0 }),
            client.r#fn(Result { n: 0 }),
            client.ok(Result { n: 0 }),
        ];
        for call in calls {
            assert_eq!(call.await.expect("a method with a hostile name"), Result { n: 1 });
        }

        let (mut tx, mut rx) = client.stream().await.expect("Stream");
        tx.send(Result { n: 7 }).await.expect("send");
        drop(tx);
        assert_eq!(rx.message().await.expect("message"), Some(Option { n: 7 }));

        let other = Option2Client::new(client.channel().clone());
        assert_eq!(other.get(Option { n: 9 }).await.expect("Get"), Option { n: 9 });
    }
}
