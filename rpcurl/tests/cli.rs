//! The `rpcurl` binary, run as a process against route guide servers on loopback sockets:
//! every method kind with the schema from reflection and from a `.proto` file, exit
//! statuses and stderr, metadata and timeouts, registry targets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use examples::route_guide::Guide;
use rpc_core::interceptor::{ServerInterceptor, ServerNext};
use rpc_core::server::{Registration, ServerBuilder};
use rpc_core::{Server, ServerContext, Status};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

#[path = "../../rpc-core/tests/support/etcd.rs"]
mod etcd_server;

/// What a run of `rpcurl` left.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "rpcurl failed: {self:?}");
        self
    }
}

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rpcurl"));
    command.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    command
}

/// Runs `rpcurl args`, with `stdin` as its input (closed after it).
async fn rpcurl(args: &[&str], stdin: &str) -> Run {
    let mut child = command(args).stdin(Stdio::piped()).spawn().expect("rpcurl runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).await.expect("write stdin");
    drop(input);
    finish(child).await
}

async fn finish(child: Child) -> Run {
    let output = child.wait_with_output().await.expect("rpcurl ends");
    Run {
        code: output.status.code().expect("exited"),
        stdout: String::from_utf8(output.stdout).expect("utf-8 out"),
        stderr: String::from_utf8(output.stderr).expect("utf-8 err"),
    }
}

/// Serves the route guide as `configure` says, on a loopback port.
async fn serve(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let server = configure(Server::builder().add_service(Guide::server()));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr.to_string()
}

fn proto_dir() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/proto").display().to_string()
}

const GET: &str = "routeguide.RouteGuide/GetFeature";
const LIST: &str = "routeguide.RouteGuide/ListFeatures";
const RECORD: &str = "routeguide.RouteGuide/RecordRoute";
const CHAT: &str = "routeguide.RouteGuide/RouteChat";

const LANDMARK_0_0: &str =
    r#"{"name":"Landmark 0-0","location":{"latitude":407000000,"longitude":-744000000}}"#;
const CORNER: &str = r#"{"lo":{"latitude":407000000,"longitude":-744000000},"hi":{"latitude":407010000,"longitude":-743990000}}"#;
const ROUTE: &str = "{\"latitude\": 407000000, \"longitude\": -744000000}\n{\"latitude\": 407010000, \"longitude\": -744000000}\n{\"latitude\": 1, \"longitude\": 1}\n";
const NOTES: &str = r#"{"location": {"latitude": 5, "longitude": 5}, "message": "first"}
{"location": {"latitude": 5, "longitude": 5}, "message": "second"}
{"location": {"latitude": 6, "longitude": 6}, "message": "elsewhere"}
"#;

/// Calls every method of the route guide at `addr` with `schema` (the options that say where
/// the schema comes from), checking each answer.
async fn every_method_kind(addr: &str, schema: &[&str]) {
    let args = |rest: &[&'static str]| -> Vec<String> {
        schema.iter().map(|s| s.to_string()).chain(rest.iter().map(|s| s.to_string())).collect()
    };
    let run = |rest: Vec<String>, stdin: &'static str| async move {
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        rpcurl(&rest, stdin).await.ok()
    };
    let get = r#"{"latitude": 407000000, "longitude": -744000000}"#;
    let mut call = args(&["call"]);
    call.extend([addr.to_owned(), GET.to_owned(), "-d".to_owned(), get.to_owned()]);
    assert_eq!(run(call, "").await.lines(), [LANDMARK_0_0]);

    let mut call = args(&["call"]);
    call.extend([addr.to_owned(), LIST.to_owned(), "-d".to_owned(), CORNER.to_owned()]);
    let features = run(call, "").await;
    let names: Vec<String> = features
        .lines()
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line")["name"].to_string())
        .collect();
    assert_eq!(names, ["\"Landmark 0-0\"", "\"Landmark 0-1\"", "\"Landmark 1-0\"", "\"Landmark 1-1\""]);

    let mut call = args(&["call"]);
    call.extend([addr.to_owned(), RECORD.to_owned()]);
    let summary = run(call, ROUTE).await;
    let summary: serde_json::Value = serde_json::from_str(summary.stdout.trim()).expect("JSON");
    assert_eq!((summary["pointCount"].as_i64(), summary["featureCount"].as_i64()), (Some(3), Some(2)));

    let mut call = args(&["call", "--emit-defaults"]);
    call.extend([addr.to_owned(), CHAT.to_owned()]);
    let chat = run(call, NOTES).await;
    // Each note comes back with the notes left before it at its place: "first" once.
    assert_eq!(chat.lines(), [r#"{"location":{"latitude":5,"longitude":5},"message":"first"}"#]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_kind_of_the_route_guide_with_the_schema_from_reflection() {
    let addr = serve(ServerBuilder::reflection).await;
    let services = rpcurl(&["list", &addr], "").await.ok();
    assert_eq!(
        services.lines(),
        ["routeguide.RouteGuide", "rpc.reflection.v1.Reflection", "grpc.health.v1.Health"]
    );
    let methods = rpcurl(&["list", &addr, "routeguide.RouteGuide"], "").await.ok();
    assert_eq!(methods.lines(), [GET, LIST, RECORD, CHAT]);
    let point = rpcurl(&["describe", &addr, "routeguide.Point"], "").await.ok();
    assert!(
        point.stdout.contains("message routeguide.Point {\n  // Latitude × 10^7.\n  int32 latitude = 1;"),
        "{point:?}"
    );
    let service = rpcurl(&["describe", &addr, "routeguide.RouteGuide"], "").await.ok();
    assert!(
        service
            .stdout
            .contains("rpc RouteChat(stream routeguide.RouteNote) returns (stream routeguide.RouteNote);"),
        "{service:?}"
    );
    every_method_kind(&addr, &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_kind_of_the_route_guide_with_the_schema_from_a_proto_file() {
    // No reflection on this server: the schema can only come from the file.
    let addr = serve(|b| b).await;
    let dir = proto_dir();
    let schema = ["--proto", "route_guide.proto", "-I", &dir];
    let listed = rpcurl(&[&schema[..], &["list"]].concat(), "").await.ok();
    assert_eq!(listed.lines(), ["routeguide.RouteGuide"]);
    let methods = rpcurl(&[&schema[..], &["list", "routeguide.RouteGuide"]].concat(), "").await.ok();
    assert_eq!(methods.lines(), [GET, LIST, RECORD, CHAT]);
    every_method_kind(&addr, &schema).await;
    let without = rpcurl(&["call", &addr, GET], "").await;
    assert_eq!(without.code, 1);
    assert!(
        without.stderr.contains("does not serve reflection") && without.stderr.contains("--proto"),
        "{without:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_call_exits_with_64_plus_its_code_and_says_which_on_stderr() {
    let addr = serve(ServerBuilder::reflection).await;
    let bad = rpcurl(&["call", &addr, LIST, "-d", "{}"], "").await;
    assert_eq!(bad.code, 64 + 3, "{bad:?}");
    assert_eq!(bad.stderr, "rpcurl: INVALID_ARGUMENT: a rectangle needs both corners\n");
    assert!(bad.stdout.is_empty());
    let unknown = rpcurl(&["health", &addr, "nobody.Here"], "").await;
    assert_eq!(unknown.code, 64 + 5, "{unknown:?}");
    assert!(unknown.stderr.starts_with("rpcurl: NOT_FOUND: "), "{unknown:?}");
    // Nothing listens on a port we held and let go.
    let closed =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let refused = rpcurl(&["--connect-timeout", "2s", "call", &closed, GET], "").await;
    assert_eq!(refused.code, 64 + 14, "{refused:?}");
    assert!(refused.stderr.starts_with("rpcurl: UNAVAILABLE: "), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_exits_1_naming_the_field_or_the_request() {
    let addr = serve(ServerBuilder::reflection).await;
    let typed = rpcurl(&["call", &addr, GET, "-d", r#"{"latitude": "north"}"#], "").await;
    assert_eq!(typed.code, 1, "{typed:?}");
    assert!(typed.stderr.contains("request 1 (routeguide.Point): at latitude: "), "{typed:?}");
    let nested =
        rpcurl(&["call", &addr, CHAT], "{\"message\": \"ok\"}\n{\"location\": {\"longitude\": true}}\n")
            .await;
    assert_eq!(nested.code, 1, "{nested:?}");
    assert!(
        nested.stderr.contains("request 2 (routeguide.RouteNote): at location.longitude: "),
        "{nested:?}"
    );
    let broken = rpcurl(&["call", &addr, RECORD], "{\"latitude\": 1}\n{\"latitude\": \n").await;
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(broken.stderr.contains("request 2: EOF while parsing"), "{broken:?}");
    let two = rpcurl(&["call", &addr, GET, "-d", "{} {}"], "").await;
    assert_eq!(two.code, 1);
    assert!(two.stderr.contains("takes one request"), "{two:?}");
    let unknown = rpcurl(&["call", &addr, "routeguide.RouteGuide/Teleport"], "").await;
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("no method Teleport (it has: GetFeature, ListFeatures"), "{unknown:?}");
    let header = rpcurl(&["-H", "Not A Key:x", "list", &addr], "").await;
    assert_eq!(header.code, 1);
    assert!(header.stderr.contains("invalid metadata key"), "{header:?}");
    let usage = rpcurl(&["call", &addr], "").await;
    assert_eq!(usage.code, 2, "{usage:?}");
}

/// Lets through only calls that carry `x-token: secret`.
struct NeedsToken;

impl ServerInterceptor for NeedsToken {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        if ctx.metadata().get_str("x-token") == Some("secret") {
            next.run(ctx).await
        } else {
            Err(Status::unauthenticated("no token"))
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_go_with_every_call_and_a_timeout_ends_a_stream_that_never_ends() {
    let addr = serve(|b| b.interceptor(NeedsToken).reflection()).await;
    let denied = rpcurl(&["call", &addr, GET], "").await;
    assert_eq!(denied.code, 64 + 16, "reflection is guarded too: {denied:?}");
    let allowed = rpcurl(&["-H", "x-token: secret", "call", &addr, GET], "").await.ok();
    assert_eq!(allowed.lines(), [r#"{"location":{}}"#]);
    // A chat whose input never ends: only the timeout can end it.
    let mut child = command(&["-H", "x-token:secret", "--timeout", "300ms", "call", &addr, CHAT])
        .stdin(Stdio::piped())
        .spawn()
        .expect("rpcurl runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(NOTES.as_bytes()).await.expect("write");
    let timed_out = finish(child).await;
    drop(input);
    assert_eq!(timed_out.code, 64 + 4, "{timed_out:?}");
    assert!(timed_out.stderr.starts_with("rpcurl: DEADLINE_EXCEEDED: "), "{timed_out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_exits_0_only_for_a_serving_service() {
    let addr = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let builder = Server::builder().add_service(Guide::server());
        builder.health_reporter().set_not_serving("routeguide.RouteGuide");
        tokio::spawn(builder.serve_with_listener(listener, std::future::pending()));
        addr
    };
    let server = rpcurl(&["health", &addr], "").await.ok();
    assert_eq!(server.lines(), ["SERVING"]);
    let guide = rpcurl(&["health", &addr, "routeguide.RouteGuide"], "").await;
    assert_eq!((guide.code, guide.stdout.as_str()), (3, "NOT_SERVING\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_targets_resolve_the_service_from_a_static_list_or_etcd() {
    let (one, two) = (serve(ServerBuilder::reflection).await, serve(ServerBuilder::reflection).await);
    let list = format!("static://{one},{two}");
    let get = r#"{"latitude": 407000000, "longitude": -744000000}"#;
    for _ in 0..2 {
        let answer = rpcurl(&["call", &list, GET, "-d", get], "").await.ok();
        assert_eq!(answer.lines(), [LANDMARK_0_0]);
    }

    let etcd = etcd_server::Etcd::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::builder()
        .add_service(Guide::server())
        .reflection()
        .register(etcd.registry().await, Registration::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    let target = format!("etcd://127.0.0.1:{}", etcd.client_port);
    let answer = rpcurl(&["call", &target, GET, "-d", get], "").await.ok();
    assert_eq!(answer.lines(), [LANDMARK_0_0]);
    let listed = rpcurl(&["list", &target], "").await.ok();
    assert!(listed.lines().contains(&"routeguide.RouteGuide"), "{listed:?}");
    let _ = stop.send(());
    serving.await.expect("joined").expect("served");
    // Deregistered: nothing left to call.
    let gone = rpcurl(&["--connect-timeout", "1s", "call", &target, GET], "").await;
    assert_eq!(gone.code, 64 + 14, "{gone:?}");
    assert!(gone.stderr.contains("no instances of routeguide.RouteGuide"), "{gone:?}");
}

/// Certificates for a test, made on the spot (rcgen) and written as PEM files to a directory
/// of its own: a CA, a server certificate for `localhost` and `127.0.0.1`, a client one.
struct Pki {
    dir: PathBuf,
    ca: rpc_core::transport::tls::Certificate,
    server: rpc_core::transport::tls::Identity,
}

impl Pki {
    fn new(test: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        use rpc_core::transport::tls::{Certificate, Identity};

        let dir = std::env::temp_dir().join(format!("rpcurl-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
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
        let (server_cert, server_key) =
            issue(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = issue(&["rpcurl.clients.test"], ExtendedKeyUsagePurpose::ClientAuth);
        for (name, pem) in [
            ("ca.pem", issuer.pem()),
            ("client.pem", client_cert),
            ("client.key", client_key),
            ("not-pem.txt", "hello".to_owned()),
        ] {
            std::fs::write(dir.join(name), pem).expect("write PEM");
        }
        Pki {
            dir,
            ca: Certificate::from_pem(issuer.pem()).expect("CA certificate"),
            server: Identity::from_pem(server_cert, server_key).expect("server identity"),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_with_cacert_cert_and_key_and_clear_failures_without_them() {
    use rpc_core::transport::tls::ServerTlsConfig;

    let pki = Pki::new("mtls");
    let tls = ServerTlsConfig::new(pki.server.clone()).client_ca_root(pki.ca.clone());
    let addr = serve(move |b| b.tls_config(tls).expect("server TLS").reflection()).await;
    let (ca, cert, key) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("client.key"));
    let mtls = ["--cacert", ca.as_str(), "--cert", cert.as_str(), "--key", key.as_str()];
    let with = |rest: &[&str]| -> Vec<String> { mtls.iter().chain(rest).map(|s| s.to_string()).collect() };
    let run = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        rpcurl(&args, "").await
    };

    // Every subcommand, over mutual TLS.
    let listed = run(with(&["list", &addr])).await.ok();
    assert!(listed.lines().contains(&"routeguide.RouteGuide"), "{listed:?}");
    let point = run(with(&["describe", &addr, "routeguide.Point"])).await.ok();
    assert!(point.stdout.contains("message routeguide.Point"), "{point:?}");
    let get = r#"{"latitude": 407000000, "longitude": -744000000}"#;
    let answer = run(with(&["call", &addr, GET, "-d", get])).await.ok();
    assert_eq!(answer.lines(), [LANDMARK_0_0]);
    let health = run(with(&["health", &addr])).await.ok();
    assert_eq!(health.lines(), ["SERVING"]);
    // The server's name checked against another name than the address's host.
    let named = run(with(&["--server-name", "localhost", "call", &addr, GET, "-d", get])).await.ok();
    assert_eq!(named.lines(), [LANDMARK_0_0]);
    // A balanced target: every instance spoken to over TLS.
    let balanced = format!("static://{addr}");
    let answer = run(with(&["call", &balanced, GET, "-d", get])).await.ok();
    assert_eq!(answer.lines(), [LANDMARK_0_0]);

    // Without the client certificate: the server refuses the handshake.
    let anonymous = rpcurl(&["--cacert", &ca, "call", &addr, GET, "-d", get], "").await;
    assert_eq!(anonymous.code, 64 + 14, "{anonymous:?}");
    assert!(
        anonymous.stderr.starts_with("rpcurl: UNAVAILABLE: ")
            && anonymous.stderr.contains("CertificateRequired"),
        "{anonymous:?}"
    );
    // In plaintext: the server says it requires TLS.
    let plaintext = rpcurl(&["call", &addr, GET, "-d", get], "").await;
    assert_eq!(plaintext.code, 64 + 14, "{plaintext:?}");
    assert!(plaintext.stderr.contains("requires TLS"), "{plaintext:?}");
    // The server's name is not what its certificate says.
    let misnamed = run(with(&["--server-name", "elsewhere.test", "health", &addr])).await;
    assert_eq!(misnamed.code, 64 + 14, "{misnamed:?}");
    assert!(misnamed.stderr.contains("not valid for name"), "{misnamed:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_files_that_are_missing_or_not_pem_exit_1_naming_the_flag_and_the_file() {
    let pki = Pki::new("files");
    // Nothing is dialed: the files are read first.
    let addr = "127.0.0.1:1";
    let (ca, cert, junk) = (pki.path("ca.pem"), pki.path("client.pem"), pki.path("not-pem.txt"));
    let missing = pki.path("missing.pem");
    let cases: [(&[&str], &str, &str); 4] = [
        (&["--cacert", &missing], "--cacert", "cannot read it"),
        (&["--cacert", &junk], "--cacert", "no certificate found"),
        (&["--cacert", &ca, "--cert", &cert, "--key", &missing], "--key", "cannot read it"),
        (&["--cacert", &ca, "--cert", &cert, "--key", &junk], "--key", "no private key found"),
    ];
    for (flags, flag, cause) in cases {
        let run = rpcurl(&[flags, &["health", addr]].concat(), "").await;
        assert_eq!(run.code, 1, "{flags:?}: {run:?}");
        assert!(
            run.stderr.starts_with(&format!("rpcurl: error: {flag} ")) && run.stderr.contains(cause),
            "{flags:?}: {run:?}"
        );
    }
    // --cert without --key is a usage error.
    let usage = rpcurl(&["--cacert", &ca, "--cert", &cert, "health", addr], "").await;
    assert_eq!(usage.code, 2, "{usage:?}");
}
