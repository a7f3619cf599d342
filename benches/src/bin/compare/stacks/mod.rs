//! The stacks compared, each as a server (run in a child process) and a client (run in
//! the harness): the same protobuf-shaped echo (`bytes payload = 1`) over one TCP
//! connection to 127.0.0.1, with `TCP_NODELAY` set explicitly on both ends. rpc-core and
//! tonic also run over TLS, each with its own rustls support, for W1 to W3.

mod grpc;
mod raw;
mod rpc;
mod tarpc_tcp;
pub(crate) mod tls;

use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::net::TcpListener;

use crate::BoxError;

/// One of the compared stacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Stack {
    /// This framework: the `Echo` service of the benches crate.
    Rpc,
    /// tonic with prost, default settings, one `Channel`.
    Tonic,
    /// tarpc over TCP, bincode serde transport.
    Tarpc,
    /// A raw tokio TCP echo with a 4-byte length prefix: the floor.
    Raw,
    /// This framework over TLS 1.3 (feature `tls`: rustls with ring).
    RpcTls,
    /// tonic over TLS 1.3 with its own rustls support (`tls-ring`).
    TonicTls,
}

impl Stack {
    /// Every stack, in the order tables list them.
    pub(crate) const ALL: [Stack; 6] =
        [Stack::Rpc, Stack::Tonic, Stack::Tarpc, Stack::Raw, Stack::RpcTls, Stack::TonicTls];

    /// The name used on the command line and in the tables.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stack::Rpc => "rpc-core",
            Stack::Tonic => "tonic",
            Stack::Tarpc => "tarpc",
            Stack::Raw => "raw",
            Stack::RpcTls => "rpc-core+tls",
            Stack::TonicTls => "tonic+tls",
        }
    }

    /// Whether the stack runs over TLS: those run W1, W2 and W3 and the connection costs,
    /// and have a section of their own in the report.
    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Stack::RpcTls | Stack::TonicTls)
    }

    /// Whether the connection costs (time to a first answer, memory held) are measured for
    /// it: rpc-core and tonic, in clear and over TLS.
    pub(crate) fn measures_connections(self) -> bool {
        matches!(self, Stack::Rpc | Stack::Tonic | Stack::RpcTls | Stack::TonicTls)
    }

    /// The stack called `name`.
    pub(crate) fn parse(name: &str) -> Option<Stack> {
        Stack::ALL.into_iter().find(|stack| stack.name() == name)
    }

    /// Whether the stack's server streams are measured (tarpc has none; the TLS stacks run
    /// W1 to W3 only).
    pub(crate) fn streams(self) -> bool {
        !matches!(self, Stack::Tarpc) && !self.is_tls()
    }

    /// Whether the stack serves W5's `work` (raw has no handlers to speak of: it answers on
    /// the connection's task, one frame after the other).
    pub(crate) fn works(self) -> bool {
        !matches!(self, Stack::Raw) && !self.is_tls()
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Serves `stack`'s echo on `listener` until the process exits.
pub(crate) async fn serve(stack: Stack, listener: TcpListener) -> Result<(), BoxError> {
    match stack {
        Stack::Rpc => rpc::serve(listener).await,
        Stack::Tonic => grpc::serve(listener).await,
        Stack::Tarpc => tarpc_tcp::serve(listener).await,
        Stack::Raw => raw::serve(listener).await,
        Stack::RpcTls => rpc::serve_tls(listener).await,
        Stack::TonicTls => grpc::serve_tls(listener).await,
    }
}

/// One stack's client, for the measurement loops: generic over it, each loop is compiled for
/// each stack, so that no stack's call pays for another's (an enum's future would be as
/// large as the largest stack's, and be moved on every call).
pub(crate) trait Echo: Clone + Send + 'static {
    /// One unary echo of `payload`: what came back.
    fn echo(&mut self, payload: Bytes) -> impl std::future::Future<Output = Result<Bytes, BoxError>> + Send;
}

/// One stack's client, for W5's loop: like [`Echo`], for `work`.
pub(crate) trait Work: Clone + Send + 'static {
    /// One `work` call: the digest that came back.
    fn work(
        &mut self,
        payload: Bytes,
        iterations: u64,
    ) -> impl std::future::Future<Output = Result<u64, BoxError>> + Send;
}

impl Work for rpc::Client {
    fn work(
        &mut self,
        payload: Bytes,
        iterations: u64,
    ) -> impl std::future::Future<Output = Result<u64, BoxError>> + Send {
        rpc::Client::work(self, payload, iterations)
    }
}

impl Work for grpc::Client {
    fn work(
        &mut self,
        payload: Bytes,
        iterations: u64,
    ) -> impl std::future::Future<Output = Result<u64, BoxError>> + Send {
        grpc::Client::work(self, payload, iterations)
    }
}

impl Work for tarpc_tcp::Client {
    fn work(
        &mut self,
        payload: Bytes,
        iterations: u64,
    ) -> impl std::future::Future<Output = Result<u64, BoxError>> + Send {
        tarpc_tcp::Client::work(self, payload, iterations)
    }
}

impl Echo for rpc::Spawned {
    fn echo(&mut self, payload: Bytes) -> impl std::future::Future<Output = Result<Bytes, BoxError>> + Send {
        rpc::Spawned::echo(self, payload)
    }
}

impl Echo for rpc::Client {
    fn echo(&mut self, payload: Bytes) -> impl std::future::Future<Output = Result<Bytes, BoxError>> + Send {
        rpc::Client::echo(self, payload)
    }
}

impl Echo for grpc::Client {
    fn echo(&mut self, payload: Bytes) -> impl std::future::Future<Output = Result<Bytes, BoxError>> + Send {
        grpc::Client::echo(self, payload)
    }
}

impl Echo for tarpc_tcp::Client {
    fn echo(&mut self, payload: Bytes) -> impl std::future::Future<Output = Result<Bytes, BoxError>> + Send {
        tarpc_tcp::Client::echo(self, payload)
    }
}

impl Echo for raw::Client {
    fn echo(&mut self, payload: Bytes) -> impl std::future::Future<Output = Result<Bytes, BoxError>> + Send {
        raw::Client::echo(self, payload)
    }
}

/// A connected client of one stack, over one connection. Clones share that connection, as
/// each stack's own client handles do; the harness gives each concurrent caller its own clone.
#[derive(Clone)]
pub(crate) enum Client {
    /// This framework, in clear or over TLS.
    Rpc(rpc::Client),
    /// tonic, in clear or over TLS.
    Tonic(grpc::Client),
    /// tarpc.
    Tarpc(tarpc_tcp::Client),
    /// Raw TCP.
    Raw(raw::Client),
}

impl Client {
    /// Connects to `stack`'s server at `addr`.
    pub(crate) async fn connect(stack: Stack, addr: SocketAddr) -> Result<Client, BoxError> {
        Ok(match stack {
            Stack::Rpc => Client::Rpc(rpc::Client::connect(addr).await?),
            Stack::Tonic => Client::Tonic(grpc::Client::connect(addr).await?),
            Stack::Tarpc => Client::Tarpc(tarpc_tcp::Client::connect(addr).await?),
            Stack::Raw => Client::Raw(raw::Client::connect(addr).await?),
            Stack::RpcTls => Client::Rpc(rpc::Client::connect_tls(addr).await?),
            Stack::TonicTls => Client::Tonic(grpc::Client::connect_tls(addr).await?),
        })
    }

    /// rpc-core's client calling `echo_spawned` instead of `echo`; `None` for another stack.
    pub(crate) fn spawned(self) -> Option<rpc::Spawned> {
        match self {
            Client::Rpc(client) => Some(client.spawned()),
            _ => None,
        }
    }

    /// Opens one server stream of `count` messages of `size` bytes and reads it to the end;
    /// fails unless exactly that arrives. `None` for a stack without streams.
    pub(crate) async fn stream(&mut self, count: u64, size: u64) -> Result<Option<()>, BoxError> {
        let (messages, bytes) = match self {
            Client::Rpc(client) => client.stream(count, size).await?,
            Client::Tonic(client) => client.stream(count, size).await?,
            Client::Tarpc(_) => return Ok(None),
            Client::Raw(client) => client.stream(count, size).await?,
        };
        if (messages, bytes) != (count, count * size) {
            return Err(format!(
                "stream delivered {messages} messages and {bytes} bytes, expected {count} and {}",
                count * size
            )
            .into());
        }
        Ok(Some(()))
    }
}
