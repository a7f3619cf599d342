//! This framework's side: the benches crate's `Echo` service, default settings.

use std::net::SocketAddr;

use benches::{EchoClient, EchoMessage, EchoServer, EchoService, StreamRequest};
use bytes::Bytes;
use rpc_core::{Channel, Server};
use tokio::net::TcpListener;

use crate::BoxError;

/// Serves the echo: `Server` with default settings, `TCP_NODELAY` set explicitly.
pub(super) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    let server = Server::builder().tcp_nodelay(true).add_service(EchoServer::new(EchoService));
    server.serve_with_listener(listener, std::future::pending()).await?;
    Ok(())
}

/// The generated client over one `Channel` (one connection).
#[derive(Clone)]
pub(crate) struct Client(EchoClient);

impl Client {
    pub(super) async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
        let channel = Channel::builder(addr).tcp_nodelay(true).connect().await?;
        Ok(Client(EchoClient::new(channel)))
    }

    pub(super) async fn echo(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.0.echo(EchoMessage { payload }).await?.payload)
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
