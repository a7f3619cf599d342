//! Each failure a user meets, with what the caller's status and the server's log line say
//! about its cause.

use rcgen::date_time_ymd;

use super::*;

fn expired(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2001, 1, 1);
}

fn not_yet_valid(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2200, 1, 1);
    params.not_after = date_time_ymd(2201, 1, 1);
}

// A current-thread runtime, so that the client logs on the test's thread.
#[tokio::test(flavor = "current_thread")]
async fn a_server_certificate_out_of_its_validity_period_is_refused_naming_why() {
    let (logged, _guard) = Logged::capture();
    let ca = Ca::new("test CA");
    for (adjust, cause) in [
        (expired as fn(&mut CertificateParams), "certificate expired"),
        (not_yet_valid, "certificate not valid yet"),
    ] {
        let leaf = ca.issue_with(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth, adjust);
        let seen = SeenTls::default();
        let server = serve_tls(ServerTlsConfig::new(leaf.identity()), &seen).await;
        let status = first_failure(format!("localhost:{}", server.addr.port()), client_config(&ca)).await;
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(status.message().contains(cause), "the status names the cause ({cause}): {status}");
        assert!(logged.has("TLS handshake failed", cause), "so does the client's log line");
        server.shutdown().await;
    }
}

// A current-thread runtime, so that the server logs on the test's thread.
#[tokio::test(flavor = "current_thread")]
async fn each_refused_client_certificate_is_named_in_the_status_and_the_servers_log() {
    let (logged, _guard) = Logged::capture();
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let server = serve_tls(config, &seen).await;
    let target = server.addr.to_string();

    let client = |adjust: fn(&mut CertificateParams)| {
        ca.issue_with(&["client.internal"], ExtendedKeyUsagePurpose::ClientAuth, adjust).identity()
    };
    let other = Ca::new("another CA");
    // (the client's configuration, what its status says, what the server's log line says)
    let cases = [
        (client_config(&ca), "CertificateRequired", "peer sent no certificates"),
        (client_config(&ca).identity(other.client("mallory").identity()), "UnknownCA", "UnknownIssuer"),
        (client_config(&ca).identity(client(expired)), "CertificateExpired", "certificate expired"),
        (
            client_config(&ca).identity(client(not_yet_valid)),
            "CertificateExpired",
            "certificate not valid yet",
        ),
    ];
    for (config, status_cause, log_cause) in cases {
        let status = first_failure(target.clone(), config).await;
        assert_eq!(status.code(), Code::Unavailable, "{status}");
        assert!(status.message().contains(status_cause), "the status names {status_cause}: {status}");
        logged.wait_for("TLS handshake failed", log_cause).await;
    }
    assert!(seen.0.lock().expect("lock").is_empty(), "no refused client reached an interceptor");
    server.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_plaintext_client_of_a_tls_server_is_logged_as_such() {
    let (logged, _guard) = Logged::capture();
    let ca = Ca::new("test CA");
    let seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &seen).await;
    let status = Channel::builder(server.addr).connect().await.expect_err("plaintext");
    assert!(status.message().contains("this server requires TLS"), "{status}");
    logged.wait_for("TLS handshake failed", "plaintext client").await;
    server.shutdown().await;
}

#[tokio::test]
async fn rbac_by_spiffe_id_alone_needs_no_token() {
    use rpc_core::interceptors::ClientCertAuth;

    let ca = Ca::new("spiffe://prod.acme.internal");
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let auth = ClientCertAuth::new()
        .allow("/test.v1.Test/Echo", ["spiffe://prod.acme.internal/ns/shop/sa/orders"])
        .allow("/test.v1.Test/*", ["spiffe://prod.acme.internal/ns/ops/sa/admin"])
        .allow("/test.v1.Test/Deadline", ["spiffe://prod.acme.internal/ns/shop/*"]);
    let server = serve_with(move |b| b.tls_config(config).expect("config").interceptor(auth)).await;
    let target = server.addr.to_string();
    let as_workload = |id: &str| {
        let leaf = ca.client_with_uri(id);
        connect(target.clone(), client_config(&ca).identity(leaf.identity()))
    };
    let sleep = crate::common::Sleep { id: 1, millis: 0 };

    // No metadata, no token: the certificate's SPIFFE ID is the whole credential.
    let orders = as_workload("spiffe://prod.acme.internal/ns/shop/sa/orders").await.expect("orders");
    echo(&orders, "x").await.expect("orders may echo");
    let denied = orders.sleep(sleep.clone()).await.expect_err("but not sleep");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");

    let admin = as_workload("spiffe://prod.acme.internal/ns/ops/sa/admin").await.expect("admin");
    admin.sleep(sleep.clone()).await.expect("admin may call every method");
    echo(&admin, "x").await.expect("echo too");

    // Every workload of the shop namespace may call Deadline; one of another namespace whose
    // name starts the same may not.
    let cart = as_workload("spiffe://prod.acme.internal/ns/shop/sa/cart").await.expect("cart");
    cart.deadline(crate::common::Empty {}).await.expect("a workload of the namespace");
    let shopping = as_workload("spiffe://prod.acme.internal/ns/shopping/sa/x").await.expect("shopping");
    let denied = shopping.deadline(crate::common::Empty {}).await.expect_err("another namespace");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");
    assert!(
        denied.message().contains("(spiffe://prod.acme.internal/ns/shopping/sa/x)"),
        "the caller is told which identity was denied: {denied}"
    );

    // Another workload of the same trust domain, and a look-alike ID.
    for id in
        ["spiffe://prod.acme.internal/ns/shop/sa/cart", "spiffe://prod.acme.internal/ns/shop/sa/orders/x"]
    {
        let other = as_workload(id).await.expect("connects: the CA signed it");
        let denied = echo(&other, "x").await.expect_err("no rule admits it");
        assert_eq!(denied.code(), Code::PermissionDenied, "{id}: {denied}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_tls_client_of_a_plaintext_server_is_named_in_both_logs() {
    let (logged, _guard) = Logged::capture();
    let ca = Ca::new("test CA");
    let server = crate::common::serve().await;
    let status = first_failure(server.addr.to_string(), client_config(&ca)).await;
    assert!(status.message().contains("is the server serving plaintext"), "{status}");
    // The plaintext server's preface check recognises a TLS ClientHello.
    logged.wait_for("closing connection", "the peer speaks TLS").await;
    assert!(logged.has("TLS handshake failed", "serving plaintext"), "the client's log line says it too");
    server.shutdown().await;
}
