//! Shared pieces of the benchmarks: an echo service and a way to run it.

use std::net::SocketAddr;

use bytes::Bytes;
use rpc_core::{Context, Server, Status};
use tokio::net::TcpListener;

/// The benchmark message: an opaque payload, echoed back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
}

/// A service that answers every request with itself.
#[rpc_core::service(package = "bench.v1")]
pub trait Echo {
    /// Returns the request unchanged.
    async fn echo(&self, ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status>;
}

/// The echo implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl Echo for EchoService {
    async fn echo(&self, _ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status> {
        Ok(request)
    }
}

/// Starts an echo server on a loopback port, in the current runtime; returns its address.
pub async fn spawn_echo_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = Server::builder().add_service(EchoServer::new(EchoService));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    Ok(addr)
}
