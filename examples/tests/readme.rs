//! The README's Rust snippets, compiled. Each `rust,ignore` block of README.md is a fragment
//! (a declaration, a few statements); here each stands in enough context to compile, and
//! `every_readme_snippet_is_compiled_here` fails if a block of the README is not found, as
//! written, in this file. A line `// ...` in a block
//! stands for code the README leaves out. rustfmt leaves the snippets' modules as written.
#![allow(
    dead_code,
    unused_imports,
    unused_variables,
    unused_mut,
    unreachable_code,
    unreachable_pub,
    clippy::unwrap_used
)]

use std::error::Error;
use std::time::{Duration, Instant};

use rpc_core::{Channel, Server, ServerContext, Status, StreamSender, Streaming};

type BoxError = Box<dyn Error + Send + Sync>;

/// The greeter of the README's opening and its operations sections.
#[rustfmt::skip] // as the README writes it
mod greeter {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloRequest {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HelloReply {
        #[prost(string, tag = "1")]
        pub message: String,
    }

    #[rpc_core::service(package = "helloworld")]
    pub trait Greeter {
        async fn say_hello(&self, ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status>;
    }

    #[derive(Clone)]
    pub struct MyGreeter;

    impl Greeter for MyGreeter {
        async fn say_hello(&self, _ctx: &mut ServerContext, request: HelloRequest) -> Result<HelloReply, Status> {
            Ok(HelloReply { message: request.name })
        }
    }

    async fn discovery(listener: tokio::net::TcpListener, shutdown: std::future::Pending<()>) -> Result<(), BoxError> {
        use rpc_core::balance::Policy;
        use rpc_core::discovery::MemoryRegistry;
        use rpc_core::server::Registration;

        let registry = MemoryRegistry::new(); // or StaticRegistry, or EtcdRegistry (feature `etcd`)

        // Registered once listening (every mounted service, at the listener's address), kept alive
        // by heartbeat, deregistered first thing at shutdown.
        Server::builder()
            .add_service(GreeterServer::new(MyGreeter))
            .register(registry.clone(), Registration::new().weight(5).tag("zone", "a"))
            .serve_with_listener(listener, shutdown)
            .await?;

        // Elsewhere: resolve by name, balance, fail over.
        let channel = Channel::balanced(registry, GreeterClient::SERVICE_NAME)
            .policy(Policy::WeightedRoundRobin)        // the default
            .idempotent("/helloworld.Greeter/*")       // may be sent to another instance after a failure
            .health_check(Duration::from_secs(5))      // optional: ask each instance's health service
            .connect()
            .await?;
        let client = GreeterClient::new(channel);
        Ok(())
    }

    async fn shutdown() -> Result<(), BoxError> {
        Server::builder()
            .add_service(GreeterServer::new(MyGreeter))
            .serve_with_shutdown("0.0.0.0:50051", rpc_core::server::shutdown_signal())
            .await?;
        Ok(())
    }

    async fn transports(svc: GreeterServer<MyGreeter>) -> Result<(), BoxError> {
        Server::builder().add_service(svc.clone()).serve("unix:/run/greeter.sock").await?;
        let channel = Channel::connect("unix:/run/greeter.sock").await?;

        let (listener, connector) = rpc_core::transport::memory::channel();
        tokio::spawn(Server::builder().add_service(svc).serve_with_listener(listener, std::future::pending()));
        let channel = Channel::builder("memory:0").connector(connector).connect().await?;
        Ok(())
    }

    async fn tls(ctx: &mut ServerContext) -> Result<(), BoxError> {
        use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

        let ca = Certificate::from_pem_file("ca.pem")?;
        let server = Server::builder()
            .tls_config(
                ServerTlsConfig::new(Identity::from_pem_files("server.pem", "server.key")?)
                    .client_ca_root(ca.clone()),          // mutual TLS; leave it out for server-only TLS
            )?
            .add_service(GreeterServer::new(MyGreeter));

        let channel = Channel::builder("greeter.internal:50051")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(ca)                    // the CAs the server's certificate must chain to
                                                           // (.with_system_roots(): the OS's store, feature "tls-native-roots")
                    .identity(Identity::from_pem_files("client.pem", "client.key")?),  // for mutual TLS
            )?
            .connect()
            .await?;

        // In a handler or an interceptor:
        let tls = ctx.tls().ok_or_else(|| Status::unauthenticated("TLS required"))?;
        let client_cert_der = tls.peer_certificates().first();   // verified against the CA, leaf first
        let who = tls.peer_dns_names();                           // its subject alternative names
        let spiffe_ids = tls.peer_uri_names();                    // URIs such as spiffe://acme/ns/prod/sa/billing
        let subject = tls.peer_subject();                         // Some("CN=billing,O=Acme"), RFC 4514 style
        Ok(())
    }

    fn client_cert_auth(tls: rpc_core::transport::tls::ServerTlsConfig) -> Result<(), BoxError> {
        use rpc_core::middleware::ClientCertAuth;

        let auth = ClientCertAuth::new()
            .allow("/shop.v1.Orders/*", ["orders.clients.internal", "spiffe://acme.internal/billing"])
            .allow("/shop.v1.Orders/GetOrder", ["support.clients.internal"])
            .allow("/shop.v1.Orders/ListOrders", ["spiffe://acme.internal/ns/reports/*"])  // a whole namespace
            .public("/grpc.health.v1.Health/*");     // no certificate needed
        let server = Server::builder().tls_config(tls)?.interceptor(auth);
        Ok(())
    }

    async fn rotation(
        svc: GreeterServer<MyGreeter>,
        ca: rpc_core::transport::tls::Certificate,
        identity: rpc_core::transport::tls::Identity,
        renewed_client_config: rpc_core::transport::tls::ClientTlsConfig,
    ) -> Result<(), BoxError> {
        use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig, TlsError};

        let load = || -> Result<ServerTlsConfig, TlsError> {
            Ok(ServerTlsConfig::new(Identity::from_pem_files("server.pem", "server.key")?)
                .client_ca_root(Certificate::from_pem_file("ca.pem")?))
        };
        let acceptor = load()?.build()?;
        let server = Server::builder().tls(acceptor.clone()).add_service(svc);
        // By hand (after a renewal, on SIGHUP...): Err keeps the previous material.
        acceptor.reload(&load()?)?;
        // Or on every change of the files, checked every 10 s; keep the watcher alive.
        let mut watcher = acceptor.watch_files(["server.pem", "server.key", "ca.pem"], Duration::from_secs(10), load);
        let outcome = watcher.next_reload().await;   // Ok(()), or why the new files were refused

        // A client: its identity and trusted CAs, the same way.
        let connector = ClientTlsConfig::new().ca_certificate(ca).identity(identity).build()?;
        let channel = Channel::builder("greeter.internal:50051").tls(connector.clone()).connect().await?;
        connector.reload(&renewed_client_config)?;   // the channel's next connections use it
        Ok(())
    }
}

/// The route guide of the streaming section.
#[rustfmt::skip] // as the README writes it
mod route_guide {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Point {
        #[prost(int32, tag = "1")]
        pub latitude: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Rectangle {
        #[prost(message, optional, tag = "1")]
        pub lo: Option<Point>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Feature {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RouteSummary {
        #[prost(int32, tag = "1")]
        pub point_count: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RouteNote {
        #[prost(string, tag = "1")]
        pub message: String,
    }

    #[rpc_core::service(package = "routeguide")]
    pub trait RouteGuide {
        async fn get_feature(&self, ctx: &mut ServerContext, request: Point) -> Result<Feature, Status>;
        async fn list_features(&self, ctx: &mut ServerContext, request: Rectangle, responses: StreamSender<Feature>)
            -> Result<(), Status>;
        async fn record_route(&self, ctx: &mut ServerContext, requests: Streaming<Point>) -> Result<RouteSummary, Status>;
        async fn route_chat(&self, ctx: &mut ServerContext, requests: Streaming<RouteNote>, responses: StreamSender<RouteNote>)
            -> Result<(), Status>;
    }

    struct Guide;

    impl RouteGuide for Guide {
        async fn get_feature(&self, _ctx: &mut ServerContext, _request: Point) -> Result<Feature, Status> {
            Ok(Feature::default())
        }

        async fn list_features(
            &self,
            _ctx: &mut ServerContext,
            _request: Rectangle,
            _responses: StreamSender<Feature>,
        ) -> Result<(), Status> {
            Ok(())
        }

        async fn record_route(&self, _ctx: &mut ServerContext, _requests: Streaming<Point>) -> Result<RouteSummary, Status> {
            Ok(RouteSummary::default())
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

    async fn calls(client: RouteGuideClient, rect: Rectangle, point: Point) -> Result<(), Status> {
        let mut features = client.list_features(rect).await?;        // server streaming
        while let Some(feature) = features.message().await? { /* ... */ }

        let (mut points, summary) = client.record_route().await?;   // client streaming
        points.send(point).await?;
        points.close();                                             // dropping it closes too
        let summary = summary.await?;

        let (mut tx, mut rx) = client.route_chat().timeout(Duration::from_secs(10)).await?; // bidi
        Ok(())
    }
}

/// A service from a `.proto` file (the examples' build script compiles helloworld.proto).
#[rustfmt::skip] // as the README writes it
mod from_proto {
    // src/lib.rs
    pub mod helloworld {
        rpc_core::include_proto!("helloworld");   // one package
    }
    // or: rpc_core::include_protos!();           // every package, as nested modules:
    //                                            // acme.billing.v1 -> acme::billing::v1

    use helloworld::{Greeter, GreeterClient, GreeterServer, HelloReply, HelloRequest};
}

/// The build script of the `.proto` section (a function here: it is compiled, not run).
#[rustfmt::skip] // as the README writes it
mod build_script {
    // build.rs
    fn main() -> Result<(), rpc_codegen::proto::Error> {
        rpc_codegen::compile_protos(&["proto/helloworld.proto"], &["proto"])
    }
}

/// The interceptors section.
#[rustfmt::skip] // as the README writes it
mod interceptors {
    use rpc_core::interceptor::{ServerInterceptor, ServerNext};
    use rpc_core::middleware::{BearerToken, CircuitBreaker, Deadlines, JwtAuth, Metrics, RateLimit, Retry, Tracing};

    use super::*;

    fn record<O>(method: &str, outcome: O, elapsed: Duration) {}

    struct Timing;

    impl ServerInterceptor for Timing {
        async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
            let (method, started) = (ctx.method(), Instant::now());
            next.run(ctx)
                .on_end(move |outcome| record(method, outcome, started.elapsed()))
                .await
        }
    }

    async fn built_ins(secret: &[u8], token: &str, addr: &str) -> Result<(), BoxError> {
        let metrics = Metrics::new();
        let server = Server::builder()
            .interceptor(Tracing::new())
            .interceptor(metrics.clone())
            .interceptor(JwtAuth::hs256(secret).issuer("auth.example").allow("/shop.v1.Orders/*", ["user"]))
            .interceptor(RateLimit::per_second(100).per_caller("x-api-key"))
            .interceptor(Deadlines::new());
        let channel = Channel::builder(addr)
            .interceptor(Tracing::new())
            .interceptor(Deadlines::new().default_timeout(Duration::from_secs(2)))
            .interceptor(Retry::new().idempotent("/shop.v1.Orders/Get"))
            .interceptor(CircuitBreaker::new())
            .interceptor(BearerToken::new(token))
            .connect()
            .await?;
        Ok(())
    }
}

/// The lines of `text`, each trimmed: the comparison ignores indentation.
fn trimmed_lines(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).collect()
}

/// The `rust,ignore` blocks of `readme`, with the line each starts on.
fn ignored_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (number, line) in readme.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```rust,ignore" => current = Some((number + 1, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some((_, block)) => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    blocks
}

/// Whether `needle`'s lines appear, in order and one after another, among `haystack`'s.
fn contains_run(haystack: &[&str], needle: &[&str]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn every_readme_snippet_is_compiled_here() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let here = std::fs::read_to_string(format!("{root}/examples/tests/readme.rs")).unwrap();
    let here = trimmed_lines(&here);

    let blocks = ignored_blocks(&readme);
    assert!(blocks.len() >= 10, "found only {} rust,ignore blocks in the README", blocks.len());
    let mut missing = Vec::new();
    for (line, block) in &blocks {
        let lines = trimmed_lines(block);
        let found = lines.split(|line| *line == "// ...").all(|part| contains_run(&here, part));
        if !found {
            missing.push(*line);
        }
    }
    assert!(
        missing.is_empty(),
        "README.md blocks starting on lines {missing:?} are not compiled in examples/tests/readme.rs \
         (copy the block there, in a context that compiles)"
    );
}

#[test]
fn the_readme_snippets_declare_working_services() -> Result<(), BoxError> {
    // The greeter the snippets declare answers over a real connection.
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(
            Server::builder()
                .add_service(greeter::GreeterServer::new(greeter::MyGreeter))
                .serve_with_listener(listener, std::future::pending()),
        );
        let client = greeter::GreeterClient::new(Channel::connect(addr.to_string()).await?);
        let reply = client.say_hello(greeter::HelloRequest { name: "readme".into() }).await?;
        assert_eq!(reply.message, "readme");
        Ok(())
    })
}
