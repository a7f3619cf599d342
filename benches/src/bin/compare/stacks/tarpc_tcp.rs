//! tarpc's side: a `#[tarpc::service]` over its serde transport on TCP with bincode, default
//! client and server configuration, `TCP_NODELAY` set on both sockets; each request is served
//! in a task of its own. tarpc has no streams.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tarpc::{client, context, serde_transport};
use tokio::net::{TcpListener, TcpStream};

use crate::BoxError;

/// The message: the same shape as the protobuf one, serialized by serde with bincode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EchoMessage {
    payload: Bytes,
}

/// Work for the server's CPU, the same shape as the protobuf one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Work {
    payload: Bytes,
    iterations: u64,
}

/// The service, as tarpc declares it.
#[allow(missing_docs, unreachable_pub)]
mod service {
    use super::{EchoMessage, Work};

    /// Echoes messages, and works.
    #[tarpc::service]
    pub(crate) trait Echo {
        /// Returns the request unchanged.
        async fn echo(request: EchoMessage) -> EchoMessage;
        /// Hashes the payload `iterations` times; the digest, or why not.
        async fn work(request: Work) -> Result<u64, String>;
    }
}

use service::{Echo, EchoClient};

/// The echo implementation.
#[derive(Clone)]
struct TarpcEcho;

impl Echo for TarpcEcho {
    async fn echo(self, _: context::Context, request: EchoMessage) -> EchoMessage {
        request
    }

    async fn work(self, _: context::Context, request: Work) -> Result<u64, String> {
        // The caller chooses it: bounded, as on rpc-core's side.
        if request.iterations > benches::MAX_WORK_ITERATIONS {
            return Err("too many iterations".to_owned());
        }
        Ok(benches::work_digest(&request.payload, request.iterations))
    }
}

/// Accepts connections and serves each on its own task, each request on its own task (the
/// tarpc README's setup).
pub(super) async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    loop {
        let (socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let transport =
            serde_transport::new(LengthDelimitedCodec::builder().new_framed(socket), Bincode::default());
        let requests =
            BaseChannel::with_defaults(transport).execute(TarpcEcho.serve()).for_each(|response| async {
                tokio::spawn(response);
            });
        tokio::spawn(requests);
    }
}

/// The generated client, over one connection.
#[derive(Clone)]
pub(crate) struct Client(EchoClient);

impl Client {
    pub(super) async fn connect(addr: SocketAddr) -> Result<Client, BoxError> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let transport =
            serde_transport::new(LengthDelimitedCodec::builder().new_framed(socket), Bincode::default());
        Ok(Client(EchoClient::new(client::Config::default(), transport).spawn()))
    }

    pub(super) async fn echo(&self, payload: Bytes) -> Result<Bytes, BoxError> {
        Ok(self.0.echo(context::current(), EchoMessage { payload }).await?.payload)
    }

    pub(super) async fn work(&self, payload: Bytes, iterations: u64) -> Result<u64, BoxError> {
        Ok(self.0.work(context::current(), Work { payload, iterations }).await??)
    }
}
