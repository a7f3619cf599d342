//! This framework's side: the benches crate's `Echo` service, default settings. Its `echo` is
//! marked `#[rpc(inline)]`; `echo_spawned` and `work` are ordinary handlers.

use std::net::SocketAddr;

use benches::{EchoClient, EchoMessage, EchoServer, EchoService, StreamRequest, Work};
use bytes::Bytes;
use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use rpc_core::{Channel, Server};
use tokio::net::TcpListener;

use super::tls;
use crate::BoxError;

/// Serves the echo: `Server` with default settings, `TCP_NODELAY` set explicitly.
pub(super) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    let server = Server::builder().tcp_nodelay(true).add_service(EchoServer::new(EchoService));
    server.serve_with_listener(listener, std::future::pending()).await?;
    Ok(())
}

/// Serves the echo over TLS 1.3 (rustls, ring), otherwise as [`serve`].
pub(super) async fn serve_tls(listener: TcpListener) -> Result<(), BoxError> {
    let material = tls::material();
    let identity = Identity::from_pem(&material.cert_pem, &material.key_pem)?;
    let server = Server::builder()
        .tcp_nodelay(true)
        .tls_config(ServerTlsConfig::new(identity))?
        .add_service(EchoServer::new(EchoService));
    server.serve_with_listener(listener, std::future::pending()).await?;
    Ok(())
}

/// The generated client over one `Channel` (one connection). Its echo calls `echo`, which
/// the server answers on the connection's task (`#[rpc(inline)]`).
#[derive(Clone)]
pub(crate) struct Client(EchoClient);

impl Client {
    pub(super) async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
        let channel = Channel::builder(addr).tcp_nodelay(true).connect().await?;
        Ok(Client(EchoClient::new(channel)))
    }

    /// A client over TLS, trusting the run's CA and checking the server's name.
    pub(super) async fn connect_tls(addr: SocketAddr) -> Result<Client, BoxError> {
        let material = tls::material();
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&material.ca_pem)?)
            .domain_name(tls::SERVER_NAME);
        let channel = Channel::builder(addr).tcp_nodelay(true).tls_config(config)?.connect().await?;
        Ok(Client(EchoClient::new(channel)))
    }

    pub(super) async fn echo(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.0.echo(EchoMessage { payload }).await?.payload)
    }

    /// This client, calling `echo_spawned` instead of `echo`.
    pub(super) fn spawned(self) -> Spawned {
        Spawned(self)
    }

    pub(super) async fn work(&self, payload: Bytes, iterations: u64) -> Result<u64, BoxError> {
        Ok(self.0.work(Work { payload, iterations }).await?.value)
    }

    pub(super) async fn stream(&self, count: u64, size: u64) -> Result<(u64, u64), BoxError> {
        let mut stream = self.0.stream(StreamRequest { count, size }).await?;
        let (mut messages, mut bytes) = (0, 0);
        while let Some(message) = stream.message().await? {
            messages += 1;
            bytes += message.payload.len() as u64;
        }
        Ok((messages, bytes))
    }
}

/// A [`Client`] whose echo calls `echo_spawned`: the same echo, its handler in a task of its
/// own, as every handler not marked `inline` is.
#[derive(Clone)]
pub(crate) struct Spawned(Client);

impl Spawned {
    pub(super) async fn echo(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.0.0.echo_spawned(EchoMessage { payload }).await?.payload)
    }
}
