//! TLS and mutual TLS: a server that requires client certificates, a client that has one,
//! and two that are turned away.
//!
//! Run with `cargo run --example tls`. It makes a certificate authority and the server's and
//! clients' certificates on the spot (with rcgen; in production they come from your PKI, as
//! PEM files: `Identity::from_pem_files`, `Certificate::from_pem_file`), serves a greeter over
//! mutual TLS on a free local port, calls it with a client certificate (the handler sees it),
//! shows that a client without a certificate and one whose certificate comes from another CA
//! are refused in the handshake, then rotates the server's certificate without a restart (a
//! reload that fails keeps the old one; one that works applies to new connections, while the
//! open one goes on), shuts down and exits 0.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rpc_core::transport::tls::TlsError;
use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use rpc_core::{Channel, Context, Server, Status};
use tokio::net::TcpListener;

/// The request: who to greet.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// The name to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// The reply: the greeting.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// Greets people, over mutual TLS.
#[rpc_core::service(package = "helloworld")]
pub trait Greeter {
    /// Says hello, and which certificate the caller presented.
    async fn say_hello(&self, ctx: &mut Context, request: HelloRequest) -> Result<HelloReply, Status>;
}

struct TlsGreeter;

impl Greeter for TlsGreeter {
    async fn say_hello(&self, ctx: &mut Context, request: HelloRequest) -> Result<HelloReply, Status> {
        // Under mutual TLS every caller has a certificate, verified against the CA; it is DER,
        // for an X.509 parser of your choice (or compare it with the certificates you issued).
        let tls = ctx.tls().ok_or_else(|| Status::unauthenticated("TLS required"))?;
        let certificate = tls
            .peer_certificates()
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        Ok(HelloReply {
            message: format!(
                "Hello, {}! ({:?}, a client certificate of {} bytes)",
                request.name,
                tls.protocol_version().unwrap_or("TLS"),
                certificate.len()
            ),
        })
    }
}

/// A certificate authority made on the spot.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new(name: &str) -> Result<Ca, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ok(Ca(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?))
    }

    fn certificate(&self) -> Result<Certificate, Box<dyn std::error::Error>> {
        Ok(Certificate::from_pem(self.0.pem())?)
    }

    /// A certificate for `names`, with its key, as the PEM files a PKI would hand out.
    fn issue(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Identity, Box<dyn std::error::Error>> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.0)?;
        Ok(Identity::from_pem(cert.pem(), key.serialize_pem())?)
    }
}

/// A certificate of `ca` with the key of another: what a half-finished renewal leaves.
fn mismatched(ca: &Ca) -> Result<Identity, Box<dyn std::error::Error>> {
    let params = || CertificateParams::new(vec!["localhost".to_owned()]);
    let (key, other_key) = (KeyPair::generate()?, KeyPair::generate()?);
    let cert = params()?.signed_by(&key, &ca.0)?;
    let identity: Result<Identity, TlsError> = Identity::from_pem(cert.pem(), other_key.serialize_pem());
    // It parses: only building a configuration from it finds the mismatch.
    Ok(identity?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let ca = Ca::new("example CA")?;
    let server_identity = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth)?;

    // The server: its certificate, and clients must present one signed by the CA. The
    // acceptor is built here, rather than by `tls_config`, to keep a handle that rotates it.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let acceptor = ServerTlsConfig::new(server_identity).client_ca_root(ca.certificate()?).build()?;
    let server = Server::builder().tls(acceptor.clone()).add_service(GreeterServer::new(TlsGreeter));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    let target = format!("localhost:{port}");

    // A client with a certificate from the CA: its calls go through.
    let orders = ca.issue(&["orders.clients.internal"], ExtendedKeyUsagePurpose::ClientAuth)?;
    let tls = ClientTlsConfig::new().ca_certificate(ca.certificate()?).identity(orders);
    let client = GreeterClient::new(Channel::builder(&target).tls_config(tls)?.connect().await?);
    let reply = client.say_hello(HelloRequest { name: "orders".into() }).await?;
    println!("with a client certificate: {}", reply.message);

    // A client without a certificate: refused in the handshake.
    let tls = ClientTlsConfig::new().ca_certificate(ca.certificate()?);
    let anonymous = Channel::builder(&target).tls_config(tls)?.connect_lazy();
    let refused = GreeterClient::new(anonymous).say_hello(HelloRequest { name: "anonymous".into() }).await;
    let status = refused.err().ok_or("a client without a certificate got through")?;
    println!("without a certificate: {:?}: {}", status.code(), status.message());

    // A client whose certificate comes from another CA: refused too.
    let rogue = Ca::new("another CA")?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(ca.certificate()?)
        .identity(rogue.issue(&["mallory"], ExtendedKeyUsagePurpose::ClientAuth)?);
    let mallory = Channel::builder(&target).tls_config(tls)?.connect_lazy();
    let refused = GreeterClient::new(mallory).say_hello(HelloRequest { name: "mallory".into() }).await;
    let status = refused.err().ok_or("a client with a certificate from another CA got through")?;
    println!("with another CA's certificate: {:?}: {}", status.code(), status.message());

    // Rotation, without a restart. First a reload that cannot work (a key of another
    // certificate, as when a tool has written one file of two): refused, the old one stays.
    let next_ca = Ca::new("example CA, next")?;
    let renewed = next_ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth)?;
    let mismatched = mismatched(&next_ca)?;
    let failed = acceptor.reload(&ServerTlsConfig::new(mismatched).client_ca_root(ca.certificate()?));
    println!("a reload with a key of another certificate: {}", failed.err().ok_or("it was accepted")?);
    // Then the new certificate, from the next CA: new handshakes use it.
    acceptor.reload(&ServerTlsConfig::new(renewed).client_ca_root(ca.certificate()?))?;
    let reply = client.say_hello(HelloRequest { name: "orders, still".into() }).await?;
    println!("after the rotation, on the connection opened before: {}", reply.message);
    let orders = || ca.issue(&["orders.clients.internal"], ExtendedKeyUsagePurpose::ClientAuth);
    let tls = ClientTlsConfig::new().ca_certificate(ca.certificate()?).identity(orders()?);
    let stale = Channel::builder(&target).tls_config(tls)?.connect_lazy();
    let refused = GreeterClient::new(stale).say_hello(HelloRequest { name: "stale".into() }).await;
    let status = refused.err().ok_or("a client that trusts only the old CA got through")?;
    println!("a new client trusting only the old CA: {:?}: {}", status.code(), status.message());
    let tls = ClientTlsConfig::new()
        .ca_certificate(ca.certificate()?)
        .ca_certificate(next_ca.certificate()?)
        .identity(orders()?);
    let fresh = GreeterClient::new(Channel::builder(&target).tls_config(tls)?.connect().await?);
    let reply = fresh.say_hello(HelloRequest { name: "orders, new connection".into() }).await?;
    println!("a new client trusting the next CA: {}", reply.message);

    let _ = stop.send(());
    serving.await??;
    println!("server shut down");
    Ok(())
}
