//! Shared pieces of the benchmarks: an echo service and a way to run it.

use std::net::SocketAddr;

use bytes::Bytes;
use rpc_core::{Context, Server, Status, StreamSender};
use tokio::net::TcpListener;

/// The benchmark message: an opaque payload, echoed back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// The payload.
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
}

/// What to stream: how many messages, of how many bytes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamRequest {
    /// Messages to send.
    #[prost(uint64, tag = "1")]
    pub count: u64,
    /// Payload bytes per message.
    #[prost(uint64, tag = "2")]
    pub size: u64,
}

/// A service that answers every request with itself, or with a stream.
#[rpc_core::service(package = "bench.v1")]
pub trait Echo {
    /// Returns the request unchanged.
    async fn echo(&self, ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status>;
    /// Streams `count` messages of `size` bytes.
    async fn stream(
        &self,
        ctx: &mut Context,
        request: StreamRequest,
        responses: StreamSender<EchoMessage>,
    ) -> Result<(), Status>;
}

/// The echo implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl Echo for EchoService {
    async fn echo(&self, _ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status> {
        Ok(request)
    }

    async fn stream(
        &self,
        _ctx: &mut Context,
        request: StreamRequest,
        mut responses: StreamSender<EchoMessage>,
    ) -> Result<(), Status> {
        let payload = Bytes::from(vec![0xab; request.size as usize]);
        // The messages are made as the stream takes them, as many at a time as the credit
        // allows: the way to stream fast (tonic's side streams the same way, from an
        // iterator-like stream).
        responses.send_all((0..request.count).map(|_| EchoMessage { payload: payload.clone() })).await
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
