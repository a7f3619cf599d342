//! TLS on every path that opens a connection: health checks, reconnections, and balanced
//! channels whose instances say in their registrations whether they serve TLS.

use rpc_core::discovery::{Instance, MemoryRegistry, StaticRegistry};
use rpc_core::server::Registration;
use tokio::net::TcpListener;

use super::*;
use crate::common::{eventually, serve_from, serve_on};

#[tokio::test]
async fn health_checks_of_a_balanced_channel_run_over_mutual_tls() {
    let ca = Ca::new("test CA");
    let config = ServerTlsConfig::new(ca.server().identity()).client_ca_root(ca.certificate());
    let builder = rpc_core::Server::builder().tls_config(config).expect("config");
    let health = builder.health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = serve_from(builder, listener).await;

    let registry = StaticRegistry::new().with(TestClient::SERVICE_NAME, addr.to_string());
    let tls = client_config(&ca).domain_name("localhost").identity(ca.client("checker").identity());
    let channel = Channel::balanced(registry, TestClient::SERVICE_NAME)
        .tls_config(tls)
        .expect("config")
        .health_check(Duration::from_millis(20))
        .connect()
        .await
        .expect("connect");
    echo(&TestClient::new(channel.clone()), "x").await.expect("echo");

    // Only a check that reached the health service (over mutual TLS: the server takes no
    // other connection) can see it stop serving, and start again.
    health.set_not_serving(TestClient::SERVICE_NAME);
    eventually("the check sees the instance not serving", || channel.instances().iter().all(|i| !i.serving))
        .await;
    health.set_serving(TestClient::SERVICE_NAME);
    eventually("the check sees it serving again", || channel.instances().iter().all(|i| i.serving)).await;
    assert!(channel.instances().iter().all(|i| !i.ejected), "no check failed its handshake");
    server.shutdown().await;
}

#[tokio::test]
async fn a_channel_reconnects_over_tls_to_a_restarted_server() {
    let ca = Ca::new("test CA");
    let first_seen = SeenTls::default();
    let server = serve_tls(ServerTlsConfig::new(ca.server().identity()), &first_seen).await;
    let addr = server.addr;
    let client = connect(format!("localhost:{}", addr.port()), client_config(&ca)).await.expect("connect");
    echo(&client, "x").await.expect("echo");
    server.kill().await;

    // The server comes back on the same port, with a new certificate from the same CA.
    let seen = SeenTls::default();
    let listener = TcpListener::bind(addr).await.expect("rebind the port");
    let (config, interceptor) = (ServerTlsConfig::new(ca.server().identity()), seen.clone());
    let restarted =
        serve_on(listener, move |b| b.tls_config(config).expect("config").interceptor(interceptor)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while echo(&client, "again").await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "the channel never reconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tls = seen.last().expect("the new connection is a TLS one");
    assert_eq!(tls.server_name(), Some("localhost"), "the reconnection checked the same name");
    restarted.shutdown().await;
}

#[tokio::test]
async fn balanced_channels_speak_tls_to_the_instances_registered_as_serving_it_and_plaintext_to_others() {
    let ca = Ca::new("test CA");
    let registry = MemoryRegistry::new();
    let (secure, plain) = (SeenTls::default(), SeenTls::default());
    let secure_server = {
        let (config, seen, registry) =
            (ServerTlsConfig::new(ca.server().identity()), secure.clone(), registry.clone());
        serve_with(move |b| {
            b.tls_config(config).expect("config").interceptor(seen).register(registry, Registration::new())
        })
        .await
    };
    let plain_server = {
        let (seen, registry) = (plain.clone(), registry.clone());
        serve_with(move |b| b.interceptor(seen).register(registry, Registration::new())).await
    };

    let channel = Channel::balanced(registry, TestClient::SERVICE_NAME)
        .tls_where_registered(client_config(&ca).domain_name("localhost"))
        .expect("config")
        .connect()
        .await
        .expect("connect");
    eventually("both instances are listed", || channel.instances().len() == 2).await;
    let listed: Vec<(String, bool)> = channel
        .instances()
        .iter()
        .map(|i| (i.instance.address().to_owned(), i.instance.serves_tls()))
        .collect();
    assert!(listed.contains(&(secure_server.addr.to_string(), true)), "a TLS server says so: {listed:?}");
    assert!(listed.contains(&(plain_server.addr.to_string(), false)), "{listed:?}");
    assert_eq!(
        channel
            .instances()
            .iter()
            .find(|i| i.instance.serves_tls())
            .map(|i| i.instance.tags()[Instance::TLS_TAG].clone()),
        Some("true".to_owned())
    );

    let client = TestClient::new(channel);
    for _ in 0..20 {
        echo(&client, "x").await.expect("echo");
    }
    let secure_calls = secure.0.lock().expect("lock").clone();
    let plain_calls = plain.0.lock().expect("lock").clone();
    assert!(!secure_calls.is_empty() && !plain_calls.is_empty(), "both instances got calls");
    assert!(secure_calls.iter().all(Option::is_some), "over TLS to the instance registered with it");
    assert!(plain_calls.iter().all(Option::is_none), "in plaintext to the other");
    secure_server.shutdown().await;
    plain_server.shutdown().await;
}
