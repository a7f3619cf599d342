//! tonic's side: code generated from `proto/bench.proto` (by protox and tonic-prost-build in
//! the build script), default settings but `TCP_NODELAY` set explicitly, one `Channel`.

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

use super::tls;
use crate::BoxError;

/// The generated messages, client and server.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
mod pb {
    tonic::include_proto!("bench.v1");
}

use pb::echo_client::EchoClient;
use pb::echo_server::{Echo, EchoServer};
use pb::{Digest, EchoMessage, StreamRequest, Work};

/// The echo implementation.
struct TonicEcho;

#[tonic::async_trait]
impl Echo for TonicEcho {
    async fn echo(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn echo_spawned(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(request.into_inner()))
    }

    async fn work(&self, request: Request<Work>) -> Result<Response<Digest>, Status> {
        let Work { payload, iterations } = request.into_inner();
        // The caller chooses it: bounded, as on rpc-core's side.
        if iterations > benches::MAX_WORK_ITERATIONS {
            return Err(Status::invalid_argument("too many iterations"));
        }
        Ok(Response::new(Digest { value: benches::work_digest(&payload, iterations) }))
    }

    type StreamStream = Pin<Box<dyn Stream<Item = Result<EchoMessage, Status>> + Send>>;

    async fn stream(&self, request: Request<StreamRequest>) -> Result<Response<Self::StreamStream>, Status> {
        let StreamRequest { count, size } = request.into_inner();
        // The caller chooses it: bounded, as on rpc-core's side.
        if size > benches::MAX_STREAM_MESSAGE_SIZE {
            return Err(Status::invalid_argument("size over the limit"));
        }
        let payload = Bytes::from(vec![0xab; size as usize]);
        // A stream that makes each message when polled: no channel, no extra task.
        let messages =
            futures_util::stream::repeat_with(move || Ok(EchoMessage { payload: payload.clone() }))
                .take(count as usize);
        Ok(Response::new(Box::pin(messages)))
    }
}

/// Serves the echo with tonic's default `Server`; accepted connections get `TCP_NODELAY`.
pub(super) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tcp_nodelay(true)
        .add_service(EchoServer::new(TonicEcho))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// Serves the echo over TLS with tonic's own rustls support (`tls-ring`), otherwise as
/// [`serve`].
pub(super) async fn serve_tls(listener: TcpListener) -> Result<(), BoxError> {
    let material = tls::material();
    let identity = Identity::from_pem(&material.cert_pem, &material.key_pem);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        .tcp_nodelay(true)
        .add_service(EchoServer::new(TonicEcho))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

/// The generated client over one `Channel` (one HTTP/2 connection).
#[derive(Clone)]
pub(crate) struct Client(EchoClient<Channel>);

impl Client {
    pub(super) async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true).connect().await?;
        Ok(Client(EchoClient::new(channel)))
    }

    /// A client over TLS, trusting the run's CA and checking the server's name.
    pub(super) async fn connect_tls(addr: SocketAddr) -> Result<Client, BoxError> {
        let material = tls::material();
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&material.ca_pem))
            .domain_name(tls::SERVER_NAME);
        let channel = Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(config)?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(Client(EchoClient::new(channel)))
    }

    pub(super) async fn echo(&mut self, payload: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.0.echo(EchoMessage { payload }).await?.into_inner().payload)
    }

    pub(super) async fn work(&mut self, payload: Bytes, iterations: u64) -> Result<u64, BoxError> {
        Ok(self.0.work(Work { payload, iterations }).await?.into_inner().value)
    }

    pub(super) async fn stream(&mut self, count: u64, size: u64) -> Result<(u64, u64), BoxError> {
        let mut stream = self.0.stream(StreamRequest { count, size }).await?.into_inner();
        let (mut messages, mut bytes) = (0, 0);
        while let Some(message) = stream.message().await? {
            messages += 1;
            bytes += message.payload.len() as u64;
        }
        Ok((messages, bytes))
    }
}
