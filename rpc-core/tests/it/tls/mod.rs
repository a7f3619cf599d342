//! TLS and mutual TLS over real sockets, with certificates made by each test (rcgen): what
//! gets through, what is turned away and with which error, and what handlers see.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    SanType,
};
use rpc_core::interceptor::{Next, ServerInterceptor};
use rpc_core::transport::TlsInfo;
use rpc_core::transport::tls::rustls;
use rpc_core::transport::tls::{
    ALPN_PROTOCOL, Certificate, ClientTlsConfig, Identity, ServerTlsConfig, TlsError,
};
use rpc_core::{Channel, Code, Context, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Echo, Running, TestClient, serve, serve_with};

/// A certificate authority of a test's own.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate issued by a [`Ca`], with its key.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Leaf {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem).expect("identity")
    }
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Ca { issuer }
    }

    fn certificate(&self) -> Certificate {
        Certificate::from_pem(self.issuer.pem()).expect("CA certificate")
    }

    fn issue(&self, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
        self.issue_with(names, usage, |_| {})
    }

    /// A certificate with parameters of the test's choosing (a validity period, say).
    fn issue_with(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        adjust(&mut params);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    fn server(&self) -> Leaf {
        self.issue(&["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth)
    }

    fn client(&self, name: &str) -> Leaf {
        self.issue(&[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A client certificate whose only name is a URI (a SPIFFE ID, say).
    fn client_with_uri(&self, uri: &str) -> Leaf {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("URI"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// Records what each call's context says about TLS.
#[derive(Clone, Default)]
struct SeenTls(Arc<Mutex<Vec<Option<TlsInfo>>>>);

impl ServerInterceptor for SeenTls {
    async fn intercept(&self, ctx: &mut Context, next: Next<'_>) -> Result<(), Status> {
        self.0.lock().expect("lock").push(ctx.tls().cloned());
        next.run(ctx).await
    }
}

impl SeenTls {
    fn last(&self) -> Option<TlsInfo> {
        self.0.lock().expect("lock").last().cloned().flatten()
    }
}

async fn serve_tls(config: ServerTlsConfig, seen: &SeenTls) -> Running {
    let seen = seen.clone();
    serve_with(move |b| b.tls_config(config).expect("server TLS config").interceptor(seen)).await
}

fn client_config(ca: &Ca) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(ca.certificate())
}

async fn connect(target: String, config: ClientTlsConfig) -> Result<TestClient, Status> {
    let builder = Channel::builder(target).tls_config(config).expect("client TLS config");
    Ok(TestClient::new(builder.connect_timeout(Duration::from_secs(5)).connect().await?))
}

async fn echo(client: &TestClient, payload: impl Into<Bytes>) -> Result<Bytes, Status> {
    Ok(client.echo(Echo { payload: payload.into() }).await?.payload)
}

#[tokio::test]
async fn calls_run_over_tls_and_the_handler_sees_the_handshake() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;
    let client =
        connect(format!("localhost:{}", server.addr.port()), client_config(&ca)).await.expect("connect");

    assert_eq!(echo(&client, "hello").await.expect("echo"), "hello");
    // A message larger than a TLS record (16 KiB), and many calls in flight at once.
    let big = Bytes::from(vec![42u8; 1 << 20]);
    assert_eq!(echo(&client, big.clone()).await.expect("big echo"), big);
    let calls = (0..50u8).map(|i| {
        let client = client.clone();
        async move { echo(&client, vec![i; 100]).await }
    });
    for (i, reply) in futures_util::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(reply.expect("concurrent echo"), vec![i as u8; 100]);
    }

    let tls = seen.last().expect("the context had TLS info");
    assert!(tls.peer_certificates().is_empty(), "no client certificate was asked for");
    assert_eq!(tls.server_name(), Some("localhost"));
    assert_eq!(tls.alpn_protocol(), Some(ALPN_PROTOCOL));
    assert_eq!(tls.protocol_version(), Some("TLSv1_3"));
    server.shutdown().await;
}

#[tokio::test]
async fn plaintext_servers_give_handlers_no_tls_info() {
    let seen = SeenTls::default();
    let interceptor = seen.clone();
    let server = serve_with(move |b| b.interceptor(interceptor)).await;
    let client = TestClient::new(Channel::connect(server.addr).await.expect("connect"));
    echo(&client, "x").await.expect("echo");
    assert_eq!(seen.0.lock().expect("lock").as_slice(), &[None]);
    server.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_hands_the_client_certificate_to_the_handler() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let server = serve_tls(config, &seen).await;
    let alice = ca.client("alice.clients.internal");
    let client = connect(server.addr.to_string(), client_config(&ca).identity(alice.identity()))
        .await
        .expect("connect with a client certificate");
    echo(&client, "hi").await.expect("echo");

    let tls = seen.last().expect("TLS info");
    assert_eq!(tls.peer_certificates().len(), 1);
    assert_eq!(tls.peer_certificates()[0], alice.der, "the handler sees the client's own certificate");
    assert_eq!(tls.peer_dns_names(), ["alice.clients.internal"], "and the names in it");
    assert!(tls.peer_uri_names().is_empty());
    // Dialed by IP address: no SNI (IP addresses are never sent as SNI).
    assert_eq!(tls.server_name(), None);
    server.shutdown().await;
}

/// Connects and makes one call; the error of whichever failed.
async fn first_failure(target: String, config: ClientTlsConfig) -> Status {
    match connect(target, config).await {
        Ok(client) => echo(&client, "x").await.expect_err("the call should fail"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn under_mutual_tls_a_client_without_a_certificate_is_turned_away() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let server = serve_tls(config, &seen).await;

    let status = first_failure(server.addr.to_string(), client_config(&ca)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("Certificate"), "the error names the missing certificate: {status}");
    assert!(seen.0.lock().expect("lock").is_empty(), "no call reached the server's interceptors");

    // The server goes on serving clients that do present one.
    let bob = ca.client("bob");
    let client =
        connect(server.addr.to_string(), client_config(&ca).identity(bob.identity())).await.expect("bob");
    echo(&client, "still serving").await.expect("echo");
    server.shutdown().await;
}

#[tokio::test]
async fn under_mutual_tls_a_client_certificate_from_another_ca_is_turned_away() {
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let server = serve_tls(config, &seen).await;

    let mallory = other.client("mallory");
    let status =
        first_failure(server.addr.to_string(), client_config(&ca).identity(mallory.identity())).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("UnknownCA"), "the server's alert reaches the client: {status}");
    assert!(seen.0.lock().expect("lock").is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn optional_client_authentication_lets_both_kinds_of_client_in() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity())
        .client_ca_root(ca.certificate())
        .client_auth_optional(true);
    let server = serve_tls(config, &seen).await;

    let anonymous = connect(server.addr.to_string(), client_config(&ca)).await.expect("anonymous");
    echo(&anonymous, "x").await.expect("anonymous echo");
    assert!(seen.last().expect("TLS info").peer_certificates().is_empty());

    let carol = ca.client("carol");
    let known =
        connect(server.addr.to_string(), client_config(&ca).identity(carol.identity())).await.expect("carol");
    echo(&known, "x").await.expect("carol's echo");
    assert_eq!(seen.last().expect("TLS info").peer_certificates()[0], carol.der);

    // A certificate is optional, but one that is there must still be valid.
    let other = Ca::new("another CA");
    let status = first_failure(
        server.addr.to_string(),
        client_config(&ca).identity(other.client("mallory").identity()),
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;

    let status = first_failure(server.addr.to_string(), client_config(&Ca::new("another CA"))).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("UnknownIssuer"), "{status}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;

    let status =
        first_failure(server.addr.to_string(), client_config(&ca).domain_name("billing.internal")).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("not valid for name \"billing.internal\""), "{status}");

    // The name the certificate does have is accepted, whatever address was dialed.
    let client =
        connect(server.addr.to_string(), client_config(&ca).domain_name("localhost")).await.expect("connect");
    echo(&client, "x").await.expect("echo");
    assert_eq!(seen.last().expect("TLS info").server_name(), Some("localhost"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_of_a_plaintext_server_is_told_what_is_wrong() {
    let ca = Ca::new("test CA");
    let server = serve().await;
    let status = first_failure(server.addr.to_string(), client_config(&ca)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("plaintext"), "{status}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_plaintext_client_of_a_tls_server_fails_and_the_server_goes_on() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;

    let plain = Channel::builder(server.addr).connect_timeout(Duration::from_secs(5)).connect().await;
    let status = plain.expect_err("a plaintext client cannot connect");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("this server requires TLS"), "told why, in its own protocol: {status}");

    let client = connect(server.addr.to_string(), client_config(&ca)).await.expect("a TLS client still can");
    echo(&client, "x").await.expect("echo");
    server.shutdown().await;
}

#[tokio::test]
async fn a_stalled_handshake_is_closed_after_the_preface_timeout_and_holds_up_nobody() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity());
    let interceptor = seen.clone();
    let server = serve_with(move |b| {
        b.tls_config(config)
            .expect("config")
            .interceptor(interceptor)
            .preface_timeout(Duration::from_millis(300))
    })
    .await;

    // A client that connects and never starts the handshake.
    let mut stalled = TcpStream::connect(server.addr).await.expect("tcp");
    // Meanwhile another client connects and calls.
    let client = connect(server.addr.to_string(), client_config(&ca)).await.expect("connect");
    echo(&client, "x").await.expect("echo while a handshake stalls");

    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 16];
    let read =
        tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "the server closed the stalled connection: {read:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "closed after about the preface timeout");

    // A client that starts the handshake and then stops mid-way is closed too.
    let mut half = TcpStream::connect(server.addr).await.expect("tcp");
    half.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50]).await.expect("a record header, no record");
    let read =
        tokio::time::timeout(Duration::from_secs(5), half.read(&mut buf)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    server.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn tls_runs_over_unix_sockets_with_a_domain_name() {
    let ca = Ca::new("test CA");
    let dir = std::env::temp_dir().join(format!("rpc-tls-{}-{}", std::process::id(), fastrand_suffix()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("s.sock");
    let target = format!("unix:{}", path.display());
    let config = ServerTlsConfig::new(ca.server().identity());
    let builder = rpc_core::Server::builder()
        .add_service(crate::common::TestServer::new(crate::common::TestService::default()))
        .tls_config(config)
        .expect("config");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(builder.serve_with_shutdown(target.clone(), async {
        let _ = stopped.await;
    }));
    crate::common::eventually("the socket exists", || path.exists()).await;

    let status = first_failure(target.clone(), client_config(&ca)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("domain name"), "a Unix socket has no host to check: {status}");

    let client = connect(target, client_config(&ca).domain_name("localhost")).await.expect("connect");
    echo(&client, "over a unix socket").await.expect("echo");
    let _ = stop.send(());
    serving.await.expect("task").expect("served");
    let _ = std::fs::remove_dir_all(&dir);
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

#[test]
fn configurations_that_cannot_work_are_refused_when_built() {
    let ca = Ca::new("test CA");
    let server = ca.server();
    let other = ca.server();

    assert!(matches!(Certificate::from_pem("no PEM here"), Err(TlsError::NoCertificate)));
    assert!(matches!(Identity::from_pem(&server.cert_pem, "no key"), Err(TlsError::NoPrivateKey)));
    assert!(matches!(ClientTlsConfig::new().build(), Err(TlsError::NoTrustedRoots)));
    assert!(matches!(
        client_config(&ca).domain_name("not a name!").build(),
        Err(TlsError::InvalidServerName(_))
    ));
    let mismatched = Identity::from_pem(&server.cert_pem, &other.key_pem).expect("parses");
    let err = ServerTlsConfig::new(mismatched).build().expect_err("a key of another certificate");
    assert!(err.to_string().to_lowercase().contains("key"), "{err}");
    assert!(matches!(Certificate::from_pem_file("/nonexistent/ca.pem"), Err(TlsError::File { .. })));
}

/// A connector from a rustls configuration of the test's own, trusting `ca`, offering `alpn`.
fn rustls_connector(ca: &Ca, alpn: Vec<Vec<u8>>) -> rpc_core::transport::tls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.issuer.der().to_vec())).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn;
    rpc_core::transport::tls::TlsConnector::from_rustls(Arc::new(config))
}

#[tokio::test]
async fn a_client_offering_only_another_application_protocol_fails_the_handshake() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;

    let h2_only = rustls_connector(&ca, vec![b"h2".to_vec()]);
    let status = Channel::builder(server.addr).tls(h2_only).connect().await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("NoApplicationProtocol"), "{status}");

    // Offering rpc/1 among others is fine; offering no ALPN at all is too.
    for alpn in [vec![b"h2".to_vec(), ALPN_PROTOCOL.to_vec()], vec![]] {
        let connector = rustls_connector(&ca, alpn);
        let channel = Channel::builder(server.addr).tls(connector).connect().await.expect("connect");
        echo(&TestClient::new(channel), "x").await.expect("echo");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn balanced_channels_speak_tls_to_every_instance() {
    use rpc_core::discovery::MemoryRegistry;
    use rpc_core::server::Registration;

    let ca = Ca::new("test CA");
    let registry = MemoryRegistry::new();
    let (a, b) = (SeenTls::default(), SeenTls::default());
    let mut servers = Vec::new();
    for seen in [&a, &b] {
        let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
        let (seen, registry) = (seen.clone(), registry.clone());
        servers.push(
            serve_with(move |builder| {
                builder
                    .tls_config(config)
                    .expect("config")
                    .interceptor(seen)
                    .register(registry, Registration::new())
            })
            .await,
        );
    }
    let client_identity = ca.client("balanced.clients.internal");
    // Instances are registered by IP address; the certificates are checked against the name
    // they share.
    let tls = client_config(&ca).domain_name("localhost").identity(client_identity.identity());
    let channel = Channel::balanced(registry, TestClient::SERVICE_NAME)
        .tls_config(tls)
        .expect("config")
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel);
    for _ in 0..20 {
        echo(&client, "x").await.expect("echo");
    }
    for seen in [&a, &b] {
        let calls = seen.0.lock().expect("lock").clone();
        assert!(!calls.is_empty(), "every instance got calls");
        for tls in calls {
            let tls = tls.expect("over TLS");
            assert_eq!(tls.peer_certificates()[0], client_identity.der);
            assert_eq!(tls.server_name(), Some("localhost"));
        }
    }
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test]
async fn client_cert_auth_admits_calls_by_the_names_in_the_client_certificate() {
    use rpc_core::interceptors::ClientCertAuth;

    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity())
        .client_ca_root(ca.certificate())
        .client_auth_optional(true);
    let auth = ClientCertAuth::new()
        .allow("/test.v1.Test/Echo", ["alice.clients.internal", "spiffe://test.internal/billing"])
        .allow("/test.v1.Test/*", ["admin.clients.internal"])
        .public("/test.v1.Test/Deadline");
    let interceptor = seen.clone();
    let server =
        serve_with(move |b| b.tls_config(config).expect("config").interceptor(interceptor).interceptor(auth))
            .await;
    let target = server.addr.to_string();
    let as_client = |leaf: Option<Leaf>| {
        let config = match leaf {
            Some(leaf) => client_config(&ca).identity(leaf.identity()),
            None => client_config(&ca),
        };
        connect(target.clone(), config)
    };

    let alice = as_client(Some(ca.client("alice.clients.internal"))).await.expect("alice");
    echo(&alice, "x").await.expect("alice may echo");
    let sleep = alice.sleep(crate::common::Sleep { id: 1, millis: 0 }).await.expect_err("but not sleep");
    assert_eq!(sleep.code(), Code::PermissionDenied, "{sleep}");

    let billing = ca.client_with_uri("spiffe://test.internal/billing");
    let billing = as_client(Some(billing)).await.expect("billing");
    echo(&billing, "x").await.expect("a SPIFFE ID is a name too");
    let uris = seen.last().expect("TLS info").peer_uri_names().to_vec();
    assert_eq!(uris, ["spiffe://test.internal/billing"]);

    let admin = as_client(Some(ca.client("admin.clients.internal"))).await.expect("admin");
    admin.sleep(crate::common::Sleep { id: 1, millis: 0 }).await.expect("admin may call anything");

    let bob = as_client(Some(ca.client("bob.clients.internal"))).await.expect("bob");
    let denied = echo(&bob, "x").await.expect_err("bob is in no rule");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");

    let anonymous = as_client(None).await.expect("anonymous");
    let refused = echo(&anonymous, "x").await.expect_err("no certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    anonymous.deadline(crate::common::Empty {}).await.expect("a public method needs no certificate");
    server.shutdown().await;
}

mod everywhere;
mod failures;
mod rotation;

/// The events logged while it is the thread's default subscriber (tests that use it run on a
/// current-thread runtime, so the server's tasks log on the test's thread): each event's
/// fields, its message among them.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<std::collections::BTreeMap<String, String>>>>);

struct FieldVisitor<'a>(&'a mut std::collections::BTreeMap<String, String>);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Logged {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = std::collections::BTreeMap::new();
        event.record(&mut FieldVisitor(&mut fields));
        self.0.lock().expect("log").push(fields);
    }
}

impl Logged {
    /// Captures the events logged on this thread until the guard is dropped.
    fn capture() -> (Logged, tracing::subscriber::DefaultGuard) {
        use tracing_subscriber::layer::SubscriberExt;
        let logged = Logged::default();
        let guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(logged.clone()));
        (logged, guard)
    }

    /// Whether an event with `message` was logged whose `err` field contains `cause`.
    fn has(&self, message: &str, cause: &str) -> bool {
        self.0.lock().expect("log").iter().any(|fields| {
            fields.get("message").is_some_and(|m| m == message)
                && fields.get("err").is_some_and(|err| err.contains(cause))
        })
    }

    /// Waits until [`has`](Self::has) holds.
    async fn wait_for(&self, message: &str, cause: &str) {
        let what = format!("a log line {message:?} naming {cause:?}");
        crate::common::eventually(&what, || self.has(message, cause)).await;
    }
}

#[tokio::test]
async fn the_handler_sees_the_subject_of_the_client_certificate() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let server = serve_tls(config, &seen).await;
    let alice = ca.issue_with(&["alice.clients.internal"], ExtendedKeyUsagePurpose::ClientAuth, |params| {
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "FR");
        params.distinguished_name.push(DnType::OrganizationName, "Acme, Inc");
        params.distinguished_name.push(DnType::CommonName, "alice");
    });
    let client = connect(server.addr.to_string(), client_config(&ca).identity(alice.identity()))
        .await
        .expect("connect");
    echo(&client, "x").await.expect("echo");
    let tls = seen.last().expect("TLS info");
    assert_eq!(tls.peer_subject(), Some("CN=alice,O=Acme\\, Inc,C=FR"));
    server.shutdown().await;
}

/// A connector from a rustls configuration of the test's own that speaks TLS 1.2 only.
fn tls12_only_connector(ca: &Ca) -> rpc_core::transport::tls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(ca.issuer.der().to_vec())).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    rpc_core::transport::tls::TlsConnector::from_rustls(Arc::new(config))
}

#[tokio::test]
async fn tls_1_3_is_the_default_and_1_2_is_opt_in() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let strict = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;
    let status = Channel::builder(strict.addr).tls(tls12_only_connector(&ca)).connect().await;
    let status = match status {
        Ok(channel) => echo(&TestClient::new(channel), "x").await.expect_err("TLS 1.2 refused"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("ProtocolVersion"), "the alert names the cause: {status}");
    // A client that allows 1.2 still gets 1.3 from a server that has it.
    let client = connect(strict.addr.to_string(), client_config(&ca).tls12(true)).await.expect("connect");
    echo(&client, "x").await.expect("echo");
    assert_eq!(seen.last().expect("TLS info").protocol_version(), Some("TLSv1_3"));
    strict.shutdown().await;

    let seen = SeenTls::default();
    let lenient = serve_tls(ServerTlsConfig::new(ca.server().identity()).tls12(true), &seen).await;
    let channel =
        Channel::builder(lenient.addr).tls(tls12_only_connector(&ca)).connect().await.expect("connect");
    echo(&TestClient::new(channel), "x").await.expect("echo over TLS 1.2");
    assert_eq!(seen.last().expect("TLS info").protocol_version(), Some("TLSv1_2"));
    lenient.shutdown().await;
}

#[cfg(feature = "tls-native-roots")]
#[tokio::test]
async fn the_system_roots_add_to_the_given_cas_and_do_not_trust_a_private_ca() {
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;
    let target = format!("localhost:{}", server.addr.port());

    // The system's store (whatever this machine has) does not know the test's private CA.
    match ClientTlsConfig::new().with_system_roots().build() {
        Ok(_) => {
            let status = first_failure(target.clone(), ClientTlsConfig::new().with_system_roots()).await;
            assert_eq!(status.code(), Code::Unavailable, "{status}");
            assert!(status.message().contains("UnknownIssuer"), "{status}");
        }
        Err(err) => assert!(matches!(err, TlsError::NoTrustedRoots), "a machine without a CA store: {err}"),
    }
    // With the CA given as well, both are trusted.
    let client = connect(target, client_config(&ca).with_system_roots()).await.expect("connect");
    echo(&client, "x").await.expect("echo");
    server.shutdown().await;
}
