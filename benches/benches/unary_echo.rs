//! One unary echo call at a time, client and server in one process: in clear, and over TLS.
//!
//! Run with `cargo bench -p benches --bench unary_echo`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use rpc_core::{Channel, Server};
use tokio::net::TcpListener;

use benches::{EchoClient, EchoMessage, EchoServer, EchoService, spawn_echo_server};

/// An echo server over TLS on a loopback port, and a client of it (a CA and a certificate for
/// `localhost` made on the spot).
async fn tls_echo_client() -> EchoClient {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("certificate");
    let identity = Identity::from_pem(cert.pem(), key.serialize_pem()).expect("identity");
    let ca = Certificate::from_pem(ca.pem()).expect("CA certificate");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new(identity))
        .expect("server TLS")
        .add_service(EchoServer::new(EchoService));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    let channel = Channel::builder(format!("localhost:{port}"))
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))
        .expect("client TLS")
        .connect()
        .await
        .expect("connect");
    EchoClient::new(channel)
}

fn unary_echo(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (plain, tls) = runtime.block_on(async {
        let addr = spawn_echo_server().await.expect("server");
        (EchoClient::new(Channel::connect(addr).await.expect("connect")), tls_echo_client().await)
    });
    let payload = Bytes::from(vec![0xab; 64]);

    let mut group = c.benchmark_group("unary_echo");
    group.throughput(Throughput::Elements(1));
    for (name, client) in [("64B", &plain), ("64B_tls", &tls)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let reply = client.echo(EchoMessage { payload: payload.clone() }).await.expect("echo");
                debug_assert_eq!(reply.payload.len(), 64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, unary_echo);
criterion_main!(benches);
