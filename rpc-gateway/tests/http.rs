//! The gateway over real sockets: route guide servers on loopback, the gateway in front of
//! them on another port, and HTTP/1.1 requests from a hyper client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use examples::route_guide::Guide;
use examples::routeguide::{
    Feature, Point, Rectangle, RouteGuide, RouteGuideServer, RouteNote, RouteSummary,
};
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use rpc_core::discovery::MemoryRegistry;
use rpc_core::interceptor::{ServerInterceptor, ServerNext};
use rpc_core::server::{Registration, ServerBuilder};
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender, Streaming};
use rpc_dynamic::Schema;
use rpc_gateway::{Config, Gateway, GatewayBuilder};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// What an HTTP request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("not JSON ({err}): {self:?}"))
    }

    fn lines(&self) -> Vec<Value> {
        self.body.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect()
    }

    /// The error body's code name and message, checking its shape.
    fn error(&self) -> (String, String) {
        let body = self.json();
        let code = body["code"].as_u64().expect("a numeric code");
        let name = body["status"].as_str().expect("a status name").to_owned();
        assert_eq!(Code::from_u32(code as u32).as_str(), name, "{body}");
        assert!(body["details"].is_array(), "{body}");
        (name, body["message"].as_str().expect("a message").to_owned())
    }
}

/// Sends one request on a connection of its own.
async fn send(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect to the gateway");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("HTTP handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("the whole body").to_bytes();
    Answer { status, headers, body: String::from_utf8(body.to_vec()).expect("UTF-8") }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, "GET", path, &[], "").await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    send(addr, "POST", path, &[], body).await
}

/// A route guide server on a loopback port, stopped when its handle is.
struct Upstream {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Upstream {
    async fn start(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Upstream {
        Upstream::start_at("127.0.0.1:0".parse().expect("address"), configure).await
    }

    /// An upstream at `addr` (a port another upstream had: it comes back).
    async fn start_at(addr: SocketAddr, configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Upstream {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let server = configure(Server::builder().add_service(Guide::server()));
        let task = tokio::spawn(server.serve_with_listener(listener, async move {
            let _ = stopped.await;
        }));
        Upstream { addr, stop: Some(stop), stopped: Some(task) }
    }

    /// Stops the server and waits until it has.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.stopped.take() {
            task.await.expect("the server task").expect("the server stops cleanly");
        }
    }
}

fn proto_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/proto")
}

fn schema() -> Schema {
    Schema::from_protos(&[proto_dir().join("route_guide.proto")], &[proto_dir()])
        .expect("the route guide's schema")
}

/// Serves `gateway` on a loopback port.
async fn serve(gateway: Gateway) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    addr
}

/// A gateway in front of one route guide server, built as `configure` says.
async fn gateway_for(
    upstream: &Upstream,
    configure: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> SocketAddr {
    let channel = Channel::builder(upstream.addr.to_string()).connect().await.expect("connect upstream");
    let builder = Gateway::builder(schema()).upstream("routeguide.RouteGuide", channel);
    serve(configure(builder).build().expect("a gateway")).await
}

/// A gateway built from a configuration file's text, with the route guide's `.proto`.
async fn gateway_from_config(extra: &str, target: &str) -> SocketAddr {
    let text = format!(
        "protos = [{proto:?}]\nimport_paths = [{dir:?}]\n{extra}\n[[upstream]]\nservice = \"routeguide.RouteGuide\"\ntarget = {target:?}\n",
        proto = proto_dir().join("route_guide.proto").display().to_string(),
        dir = proto_dir().display().to_string(),
    );
    let config = Config::from_toml(&text).expect("the configuration parses");
    serve(Gateway::from_config(&config).await.expect("a gateway from the configuration")).await
}

const LANDMARK: &str = r#"{"name":"Landmark 0-0","location":{"latitude":407000000,"longitude":-744000000}}"#;
const CORNERS: &str =
    "lo.latitude=407000000&lo.longitude=-744000000&hi.latitude=407010000&hi.longitude=-743990000";

#[tokio::test]
async fn every_method_kind_by_name_and_by_its_rest_route() {
    let upstream = Upstream::start(|s| s).await;
    let gateway = gateway_for(&upstream, |g| g).await;

    let by_name = post(
        gateway,
        "/routeguide.RouteGuide/GetFeature",
        r#"{"latitude": 407000000, "longitude": -744000000}"#,
    )
    .await;
    assert_eq!((by_name.status, by_name.body.as_str()), (200, LANDMARK));
    assert_eq!(by_name.headers["content-type"], "application/json");

    let by_path = get(gateway, "/v1/features/407000000/-744000000").await;
    assert_eq!((by_path.status, by_path.body.as_str()), (200, LANDMARK));

    let listed = get(gateway, &format!("/v1/features?{CORNERS}")).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(listed.headers["content-type"], "application/x-ndjson");
    let names: Vec<Value> = listed.lines().iter().map(|f| f["name"].clone()).collect();
    assert_eq!(
        names,
        [json!("Landmark 0-0"), json!("Landmark 0-1"), json!("Landmark 1-0"), json!("Landmark 1-1")]
    );

    let events =
        send(gateway, "GET", &format!("/v1/features?{CORNERS}"), &[("accept", "text/event-stream")], "")
            .await;
    assert_eq!(events.headers["content-type"], "text/event-stream");
    let data: Vec<&str> = events.body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(data.len(), 4, "{events:?}");
    assert!(data.iter().all(|e| e.starts_with("data: {\"name\":\"Landmark")), "{events:?}");

    let route = r#"[{"latitude": 407000000, "longitude": -744000000}, {"latitude": 407010000, "longitude": -744000000}, {"latitude": 1, "longitude": 1}]"#;
    let summary = post(gateway, "/v1/routes", route).await;
    assert_eq!(summary.status, 200, "{summary:?}");
    assert_eq!(
        (summary.json()["pointCount"].as_i64(), summary.json()["featureCount"].as_i64()),
        (Some(3), Some(2))
    );

    // Newline-delimited requests, responses as they come: the second note at a place gets
    // the first back.
    let notes = "{\"location\": {\"latitude\": 5, \"longitude\": 5}, \"message\": \"first\"}\n\
                 {\"location\": {\"latitude\": 5, \"longitude\": 5}, \"message\": \"second\"}\n";
    let chat = post(gateway, "/v1/notes", notes).await;
    assert_eq!(chat.status, 200, "{chat:?}");
    let messages: Vec<Value> = chat.lines().iter().map(|n| n["message"].clone()).collect();
    assert_eq!(messages, [json!("first")]);
}

#[tokio::test]
async fn malformed_json_misfit_fields_and_oversized_bodies_get_400_with_the_reason() {
    let upstream = Upstream::start(|s| s).await;
    let gateway = gateway_for(&upstream, |g| g.max_body_bytes(1024)).await;
    let get_feature = "/routeguide.RouteGuide/GetFeature";

    let malformed = post(gateway, get_feature, r#"{"latitude": 1,"#).await;
    assert_eq!(malformed.status, 400);
    let (code, message) = malformed.error();
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(message.contains("malformed JSON"), "{message}");

    let misfit = post(gateway, get_feature, r#"{"latitude": "north"}"#).await;
    assert_eq!(misfit.status, 400);
    assert!(misfit.error().1.contains("latitude"), "{misfit:?}");

    let unknown = post(gateway, get_feature, r#"{"altitude": 3}"#).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.error().1.contains("altitude"), "{unknown:?}");

    let path_misfit = get(gateway, "/v1/features/north/1").await;
    assert_eq!(path_misfit.status, 400);
    assert!(path_misfit.error().1.contains("latitude"), "{path_misfit:?}");

    let stream_misfit = post(gateway, "/v1/routes", r#"[{"latitude": 1}, {"latitude": true}]"#).await;
    assert_eq!(stream_misfit.status, 400);
    assert!(stream_misfit.error().1.contains("request 2"), "{stream_misfit:?}");

    let padding = " ".repeat(1024);
    let at_limit = post(gateway, get_feature, &format!("{}{}", &padding[..1024 - 2], "{}")).await;
    assert_eq!(at_limit.status, 200, "{at_limit:?}");
    let over = post(gateway, get_feature, &format!("{padding}{{}}")).await;
    assert_eq!(over.status, 400);
    let (code, message) = over.error();
    assert_eq!(code, "INVALID_ARGUMENT");
    assert!(message.contains("larger than the limit of 1024 bytes"), "{message}");
}

#[tokio::test]
async fn unknown_routes_are_404_and_known_paths_with_another_verb_405() {
    let upstream = Upstream::start(|s| s).await;
    let gateway = gateway_for(&upstream, |g| g).await;

    let unknown = get(gateway, "/v2/nothing").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.error(), ("NOT_FOUND".to_owned(), "no route for GET /v2/nothing".to_owned()));

    let unknown_method = post(gateway, "/routeguide.RouteGuide/Teleport", "{}").await;
    assert_eq!(unknown_method.status, 404);

    let wrong_verb = send(gateway, "DELETE", "/v1/features/1/2", &[], "").await;
    assert_eq!(wrong_verb.status, 405);
    assert!(wrong_verb.error().1.contains("GET /v1/features/{latitude}/{longitude}"), "{wrong_verb:?}");
}

/// Fails every call with the code named by its `x-fail-with` metadata.
struct FailWith;

impl ServerInterceptor for FailWith {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        let code =
            ctx.metadata().get("x-fail-with").and_then(|v| std::str::from_utf8(v).ok()?.parse::<u32>().ok());
        match code.map(Code::from_u32) {
            Some(code) => Err(Status::new(code, format!("failed as asked: {}", code.as_str()))),
            None => next.run(ctx).await,
        }
    }
}

#[tokio::test]
async fn statuses_map_to_grpc_gateway_http_codes_with_a_json_body() {
    let upstream = Upstream::start(|s| s.interceptor(FailWith)).await;
    let gateway = gateway_for(&upstream, |g| g).await;
    for (code, http) in [
        (Code::NotFound, 404),
        (Code::PermissionDenied, 403),
        (Code::Unavailable, 503),
        (Code::Internal, 500),
        (Code::Unimplemented, 501),
    ] {
        let number = code.as_u32().to_string();
        let answer = send(gateway, "GET", "/v1/features/1/2", &[("x-fail-with", &number)], "").await;
        assert_eq!(answer.status, http, "{code}: {answer:?}");
        assert_eq!(answer.error(), (code.as_str().to_owned(), format!("failed as asked: {}", code.as_str())));
        // The same for a stream that fails before its first response.
        let streamed = send(gateway, "GET", "/v1/features", &[("x-fail-with", &number)], "").await;
        assert_eq!(streamed.status, http, "{code}: {streamed:?}");
    }
    // The handler's own status: a rectangle without its second corner.
    let half = get(gateway, "/v1/features?lo.latitude=1").await;
    assert_eq!(half.status, 400);
    assert_eq!(half.error().1, "a rectangle needs both corners");
}

fn token(secret: &str, roles: &[&str]) -> String {
    let exp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() + 600;
    let claims = json!({ "sub": "tester", "exp": exp, "roles": roles });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

#[tokio::test]
async fn jwt_auth_and_access_rules_run_at_the_edge() {
    let upstream = Upstream::start(|s| s).await;
    let auth = r#"
        [auth]
        hs256_secret = "gateway secret"
        public = ["/routeguide.RouteGuide/GetFeature"]
        allow = [{ method = "/routeguide.RouteGuide/*", roles = ["guide"] }]
    "#;
    let gateway = gateway_from_config(auth, &upstream.addr.to_string()).await;

    let public = get(gateway, "/v1/features/1/2").await;
    assert_eq!(public.status, 200, "{public:?}");

    let route = r#"[{"latitude": 1, "longitude": 1}]"#;
    let anonymous = post(gateway, "/v1/routes", route).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    assert_eq!(anonymous.error().0, "UNAUTHENTICATED");

    let forged = format!("Bearer {}", token("another secret", &["guide"]));
    let answer = send(gateway, "POST", "/v1/routes", &[("authorization", &forged)], route).await;
    assert_eq!(answer.status, 401, "{answer:?}");

    let visitor = format!("Bearer {}", token("gateway secret", &["visitor"]));
    let answer = send(gateway, "POST", "/v1/routes", &[("authorization", &visitor)], route).await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.error().0, "PERMISSION_DENIED");

    let guide = format!("Bearer {}", token("gateway secret", &["guide"]));
    let answer = send(gateway, "POST", "/v1/routes", &[("authorization", &guide)], route).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["pointCount"], 1);
}

#[tokio::test]
async fn a_rate_limit_at_the_edge_answers_429_per_caller() {
    let upstream = Upstream::start(|s| s).await;
    // One call a minute with a burst of two: a third call is over, however slow the machine
    // (the bucket refills one call a minute).
    let limit = "[rate_limit]\nper_minute = 1\nburst = 2\nper_caller = \"x-api-key\"\n";
    let gateway = gateway_from_config(limit, &upstream.addr.to_string()).await;
    let call = |key: &'static str| async move {
        send(gateway, "GET", "/v1/features/1/2", &[("x-api-key", key)], "").await
    };
    assert_eq!(call("alice").await.status, 200);
    assert_eq!(call("alice").await.status, 200);
    let over = call("alice").await;
    assert_eq!(over.status, 429, "{over:?}");
    assert_eq!(over.error().0, "RESOURCE_EXHAUSTED");
    // Another caller has buckets of its own.
    assert_eq!(call("bob").await.status, 200);
}

/// Keeps the `traceparent` every call arrives with.
#[derive(Clone, Default)]
struct SeenTraces(Arc<Mutex<Vec<String>>>);

impl ServerInterceptor for SeenTraces {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        let seen = ctx.metadata().get("traceparent").map(|v| String::from_utf8_lossy(v).into_owned());
        self.0.lock().expect("lock").push(seen.unwrap_or_default());
        next.run(ctx).await
    }
}

#[tokio::test]
async fn traceparent_goes_on_to_the_service_and_metrics_count_the_calls() {
    let seen = SeenTraces::default();
    let upstream = Upstream::start({
        let seen = seen.clone();
        |s| s.interceptor(seen)
    })
    .await;
    let gateway = gateway_for(&upstream, |g| g).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let answer = send(gateway, "GET", "/v1/features/1/2", &[("traceparent", incoming)], "").await;
    assert_eq!(answer.status, 200);

    let onward = seen.0.lock().expect("lock").pop().expect("the service saw the call");
    let parts: Vec<&str> = onward.split('-').collect();
    assert_eq!(parts.len(), 4, "{onward}");
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(parts[2], "00f067aa0ba902b7", "a span of its own");
    let answered = answer.headers["traceparent"].to_str().expect("ASCII");
    assert!(answered.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{answered}");

    let _ = get(gateway, "/v1/nothing").await;
    let metrics = get(gateway, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains(r#"rpc_server_requests_total{method="/routeguide.RouteGuide/GetFeature"} 1"#),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn calls_go_on_to_the_instances_left_when_one_dies_and_fail_503_when_none_is() {
    let mut first = Upstream::start(|s| s).await;
    let mut second = Upstream::start(|s| s).await;
    let gateway = gateway_from_config("", &format!("static://{},{}", first.addr, second.addr)).await;
    for _ in 0..4 {
        assert_eq!(get(gateway, "/v1/features/1/2").await.status, 200);
    }

    first.stop().await;
    for n in 0..6 {
        let answer = get(gateway, "/v1/features/1/2").await;
        assert_eq!(answer.status, 200, "call {n} after an instance died: {answer:?}");
    }

    second.stop().await;
    let answer = get(gateway, "/v1/features/1/2").await;
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.error().0, "UNAVAILABLE");
}

#[path = "../../rpc-core/tests/support/etcd.rs"]
mod etcd_server;

#[tokio::test]
async fn instances_are_found_in_etcd_and_in_the_in_process_registry() {
    let get_feature = "/v1/features/407000000/-744000000";

    let etcd = etcd_server::Etcd::start().await;
    let registered = Upstream::start({
        let registry = etcd.registry().await;
        move |s| s.register(registry, Registration::new())
    })
    .await;
    let gateway = gateway_from_config("", &format!("etcd://127.0.0.1:{}", etcd.client_port)).await;
    let answer = get(gateway, get_feature).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, LANDMARK), "{answer:?}");
    drop(registered);

    let memory = MemoryRegistry::new();
    let _in_process = Upstream::start({
        let memory = memory.clone();
        move |s| s.register(memory, Registration::new())
    })
    .await;
    let channel =
        Channel::balanced(memory, "routeguide.RouteGuide").connect().await.expect("a balanced channel");
    let gateway = serve(
        Gateway::builder(schema()).upstream("routeguide.RouteGuide", channel).build().expect("gateway"),
    )
    .await;
    let answer = get(gateway, get_feature).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, LANDMARK), "{answer:?}");
}

#[tokio::test]
async fn without_proto_files_the_schema_and_its_routes_come_from_reflection() {
    let upstream = Upstream::start(ServerBuilder::reflection).await;
    let config = Config::from_toml(&format!(
        "[[upstream]]\nservice = \"routeguide.RouteGuide\"\ntarget = \"{}\"\n",
        upstream.addr
    ))
    .expect("config");
    let gateway = serve(Gateway::from_config(&config).await.expect("a gateway by reflection")).await;
    let answer = get(gateway, "/v1/features/407000000/-744000000").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, LANDMARK), "{answer:?}");
}

#[tokio::test]
async fn the_binary_serves_what_its_configuration_file_says() {
    use tokio::io::AsyncBufReadExt;

    let upstream = Upstream::start(|s| s).await;
    let dir = std::env::temp_dir().join(format!("rpc-gateway-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "protos = [\"route_guide.proto\"]\nimport_paths = [{dir:?}]\n[[upstream]]\nservice = \"routeguide.RouteGuide\"\ntarget = \"{}\"\n",
            upstream.addr,
            dir = proto_dir().display().to_string(),
        ),
    )
    .expect("write the configuration");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpc-gateway"))
        .arg("--config")
        .arg(&file)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rpc-gateway runs");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = lines.next_line().await.expect("read stdout").expect("a first line");
    let addr: SocketAddr =
        line.strip_prefix("listening on ").expect("where it listens").parse().expect("an address");
    let answer = get(addr, "/v1/features/407000000/-744000000").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, LANDMARK), "{answer:?}");
    child.kill().await.expect("stop the gateway");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A route guide whose feature list breaks after its first feature.
struct BrokenGuide;

impl RouteGuide for BrokenGuide {
    async fn get_feature(&self, _ctx: &mut ServerContext, request: Point) -> Result<Feature, Status> {
        Ok(Feature { name: "somewhere".into(), location: Some(request) })
    }

    async fn list_features(
        &self,
        _ctx: &mut ServerContext,
        request: Rectangle,
        mut responses: StreamSender<Feature>,
    ) -> Result<(), Status> {
        responses.send(Feature { name: "the first".into(), location: request.lo }).await?;
        Err(Status::new(Code::DataLoss, "the map tore here"))
    }

    async fn record_route(
        &self,
        _ctx: &mut ServerContext,
        _requests: Streaming<Point>,
    ) -> Result<RouteSummary, Status> {
        Err(Status::unimplemented("not in this guide"))
    }

    async fn route_chat(
        &self,
        _ctx: &mut ServerContext,
        _requests: Streaming<RouteNote>,
        _responses: StreamSender<RouteNote>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented("not in this guide"))
    }
}

#[tokio::test]
async fn a_stream_that_fails_after_it_began_ends_with_an_error_line_or_event() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        Server::builder()
            .add_service(RouteGuideServer::new(BrokenGuide))
            .serve_with_listener(listener, std::future::pending()),
    );
    let channel = Channel::builder(addr.to_string()).connect().await.expect("connect upstream");
    let gateway = serve(
        Gateway::builder(schema()).upstream("routeguide.RouteGuide", channel).build().expect("gateway"),
    )
    .await;

    let lines = get(gateway, "/v1/features?lo.latitude=1&lo.longitude=2").await;
    assert_eq!(lines.status, 200, "the head went out with the first feature");
    let lines = lines.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["name"], "the first");
    assert_eq!(lines[1]["error"]["status"], "DATA_LOSS");
    assert_eq!(lines[1]["error"]["message"], "the map tore here");

    let events =
        send(gateway, "GET", "/v1/features?lo.latitude=1", &[("accept", "text/event-stream")], "").await;
    let events: Vec<&str> = events.body.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0].starts_with("data: {\"name\":\"the first\""), "{events:?}");
    assert!(events[1].starts_with("event: error\ndata: {\"code\":15,"), "{events:?}");
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_without_a_declared_length() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = Upstream::start(|s| s).await;
    let gateway = gateway_for(&upstream, |g| g.max_body_bytes(1024)).await;
    let mut stream = tokio::net::TcpStream::connect(gateway).await.expect("connect");
    let chunk = " ".repeat(1000);
    let request = format!(
        "POST /routeguide.RouteGuide/GetFeature HTTP/1.1\r\nhost: gateway\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         {len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n2\r\n{{}}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    stream.write_all(request.as_bytes()).await.expect("send");
    // The gateway answers without reading the rest, and closes: a reset may follow the
    // answer, so keep what arrived before it.
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n @ 1..) = stream.read(&mut buffer).await {
        received.extend_from_slice(&buffer[..n]);
    }
    let answer = String::from_utf8_lossy(&received);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("larger than the limit of 1024 bytes"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn upstreams_behind_mutual_tls_are_reached_with_the_files_of_upstream_tls() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rpc_core::transport::tls::{Certificate, Identity, ServerTlsConfig};

    // A CA, a certificate for the upstream and one for the gateway, made on the spot.
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let issue = |names: &[&str], usage| {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = issue(&["guide.internal"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = issue(&["gateway.internal"], ExtendedKeyUsagePurpose::ClientAuth);
    let ca = Certificate::from_pem(issuer.pem()).expect("CA certificate");
    let tls = ServerTlsConfig::new(Identity::from_pem(server_cert, server_key).expect("identity"))
        .client_ca_root(ca);
    let upstream = Upstream::start(move |s| s.tls_config(tls).expect("server TLS")).await;

    let dir = std::env::temp_dir().join(format!("rpc-gateway-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    for (name, pem) in [("ca.pem", issuer.pem()), ("gateway.pem", client_cert), ("gateway.key", client_key)] {
        std::fs::write(dir.join(name), pem).expect("write PEM");
    }
    // Relative paths, from the configuration file's directory; the instances are registered
    // by IP address but their certificate names the service.
    let config = |tls: &str| {
        let file = dir.join("gateway.toml");
        std::fs::write(
            &file,
            format!(
                "protos = [\"route_guide.proto\"]\nimport_paths = [{protos:?}]\n[[upstream]]\nservice = \"routeguide.RouteGuide\"\ntarget = \"static://{}\"\n[upstream.tls]\n{tls}",
                upstream.addr,
                protos = proto_dir().display().to_string(),
            ),
        )
        .expect("write the configuration");
        Config::from_file(&file).expect("the configuration parses")
    };
    let mutual = config(
        "ca = \"ca.pem\"\ncert = \"gateway.pem\"\nkey = \"gateway.key\"\nserver_name = \"guide.internal\"\n",
    );
    let gateway = serve(Gateway::from_config(&mutual).await.expect("a gateway over mutual TLS")).await;
    for _ in 0..2 {
        let answer = get(gateway, "/v1/features/407000000/-744000000").await;
        assert_eq!((answer.status, answer.body.as_str()), (200, LANDMARK), "{answer:?}");
    }

    // Without its certificate the gateway is turned away in the handshake: 503, naming why.
    let anonymous = config("ca = \"ca.pem\"\nserver_name = \"guide.internal\"\n");
    let refused = match Gateway::from_config(&anonymous).await {
        Err(err) => err.to_string(),
        Ok(gateway) => {
            let answer = get(serve(gateway).await, "/v1/features/407000000/-744000000").await;
            assert_eq!(answer.status, 503, "{answer:?}");
            answer.body
        }
    };
    assert!(refused.contains("CertificateRequired"), "{refused}");

    // Files that are missing, or a cert without its key: a configuration error naming them.
    let missing = Gateway::from_config(&config("ca = \"nowhere.pem\"\n")).await.expect_err("no CA file");
    assert!(
        missing.to_string().contains("upstream.tls.ca") && missing.to_string().contains("nowhere.pem"),
        "{missing}"
    );
    let half =
        Gateway::from_config(&config("ca = \"ca.pem\"\ncert = \"gateway.pem\"\n")).await.expect_err("no key");
    assert!(half.to_string().contains("cert and key go together"), "{half}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_gateway_certificate_is_used_by_new_connections_without_a_restart() {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    use rpc_core::transport::tls::{Certificate, Identity, ServerTlsConfig};

    let ca = || {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
    };
    let issue = |issuer: &CertifiedIssuer<'_, KeyPair>, name: &str, usage| {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    };
    // The upstream's certificate is from `servers`; the gateway's first one from `old`, the
    // one it rotates to from `new`.
    let (servers, old, new) = (ca(), ca(), ca());
    let (server_cert, server_key) = issue(&servers, "guide.internal", ExtendedKeyUsagePurpose::ServerAuth);
    let upstream_trusting = |clients: &CertifiedIssuer<'_, KeyPair>| {
        let identity = Identity::from_pem(server_cert.clone(), server_key.clone()).expect("identity");
        let ca = Certificate::from_pem(clients.pem()).expect("CA certificate");
        ServerTlsConfig::new(identity).client_ca_root(ca)
    };
    let first = upstream_trusting(&old);
    let mut upstream = Upstream::start(move |s| s.tls_config(first).expect("server TLS")).await;

    let dir = std::env::temp_dir().join(format!("rpc-gateway-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory");
    let install = |(cert, key): (String, String)| {
        // Each file replaced whole by a rename, as certificate tooling does.
        for (name, pem) in [("gateway.key", key), ("gateway.pem", cert)] {
            let staged = dir.join(format!("{name}.new"));
            std::fs::write(&staged, pem).expect("write PEM");
            std::fs::rename(&staged, dir.join(name)).expect("rename");
        }
    };
    std::fs::write(dir.join("ca.pem"), servers.pem()).expect("write PEM");
    install(issue(&old, "gateway.internal", ExtendedKeyUsagePurpose::ClientAuth));
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "protos = [\"route_guide.proto\"]\nimport_paths = [{protos:?}]\n[[upstream]]\nservice = \"routeguide.RouteGuide\"\ntarget = \"static://{addr}\"\n[upstream.tls]\nca = \"ca.pem\"\ncert = \"gateway.pem\"\nkey = \"gateway.key\"\nserver_name = \"guide.internal\"\nreload_every = \"20ms\"\n",
            addr = upstream.addr,
            protos = proto_dir().display().to_string(),
        ),
    )
    .expect("write the configuration");
    let config = Config::from_file(&file).expect("the configuration parses");
    let gateway = serve(Gateway::from_config(&config).await.expect("a gateway over mutual TLS")).await;
    let path = "/v1/features/407000000/-744000000";
    let answer = get(gateway, path).await;
    assert_eq!((answer.status, answer.body.as_str()), (200, LANDMARK), "{answer:?}");

    // The gateway's certificate is rotated to one from `new`, and the upstream comes back
    // trusting only `new`: the gateway gets through again only by presenting the new
    // certificate, which it reads without a restart when it reconnects.
    install(issue(&new, "gateway.internal", ExtendedKeyUsagePurpose::ClientAuth));
    let addr = upstream.addr;
    upstream.stop().await;
    let second = upstream_trusting(&new);
    let _upstream = Upstream::start_at(addr, move |s| s.tls_config(second).expect("server TLS")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let answer = get(gateway, path).await;
        if answer.status == 200 {
            assert_eq!(answer.body, LANDMARK);
            break;
        }
        // Until the watcher has loaded the new files and the channel has reconnected.
        assert_eq!(answer.status, 503, "{answer:?}");
        assert!(std::time::Instant::now() < deadline, "the rotated certificate was never used: {answer:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
