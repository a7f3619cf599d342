//! Shared pieces of the benchmarks: an echo service and a way to run it.

use std::net::SocketAddr;

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rpc_core::transport::tls::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use rpc_core::{Channel, Context, Server, Status, StreamSender};
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

/// Work for the server's CPU: hash `payload` `iterations` times (see [`work_digest`]).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Work {
    /// The bytes to hash.
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
    /// How many times to hash them.
    #[prost(uint64, tag = "2")]
    pub iterations: u64,
}

/// The answer to [`Work`]: the last hash.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Digest {
    /// [`work_digest`] of the request.
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// The largest payload a stream message may be asked to carry: the default frame limit
/// (4 MiB) less room for the message's own encoding and the frame's header.
pub const MAX_STREAM_MESSAGE_SIZE: u64 = (rpc_core::wire::DEFAULT_MAX_FRAME_SIZE - 1024) as u64;

/// The most rounds of hashing a [`Work`] request may ask for: about 100 ms of CPU on a
/// current machine, 5,000 times the comparison's 20 µs.
pub const MAX_WORK_ITERATIONS: u64 = 1_000_000;

/// `iterations` rounds of FNV-1a (64 bits) over `payload`, each round seeded with the last
/// one's hash; 0 for no rounds. Every round reads the payload through
/// [`std::hint::black_box`], so that the compiler can neither skip rounds nor hoist their
/// work out of the loop: the time it takes is what the rounds cost.
pub fn work_digest(payload: &[u8], iterations: u64) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut digest = 0;
    for _ in 0..iterations {
        let mut hash = OFFSET ^ digest;
        for &byte in std::hint::black_box(payload) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
        digest = std::hint::black_box(hash);
    }
    digest
}

/// A service that answers every request with itself, or with a stream, or with the digest
/// of some work.
#[rpc_core::service(package = "bench.v1")]
pub trait Echo {
    /// Returns the request unchanged. Answered on the connection's task (`inline`): the
    /// handler never waits, so a task of its own would only add a spawn and a hand-off.
    #[rpc(inline)]
    async fn echo(&self, ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status>;
    /// Returns the request unchanged, like `echo`, but in a task of its own, as every
    /// handler not marked `inline` is: what a trivial handler costs by default.
    async fn echo_spawned(&self, ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status>;
    /// Streams `count` messages of `size` bytes.
    async fn stream(
        &self,
        ctx: &mut Context,
        request: StreamRequest,
        responses: StreamSender<EchoMessage>,
    ) -> Result<(), Status>;
    /// Hashes the payload `iterations` times ([`work_digest`]) and answers the digest: a
    /// handler that keeps a CPU busy. Not `inline`: each call runs in a task of its own, so
    /// that the calls of one connection spread over every worker of the runtime.
    async fn work(&self, ctx: &mut Context, request: Work) -> Result<Digest, Status>;
}

/// The echo implementation.
#[derive(Debug, Clone, Copy, Default)]
pub struct EchoService;

impl Echo for EchoService {
    async fn echo(&self, _ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status> {
        Ok(request)
    }

    async fn echo_spawned(&self, _ctx: &mut Context, request: EchoMessage) -> Result<EchoMessage, Status> {
        Ok(request)
    }

    async fn stream(
        &self,
        _ctx: &mut Context,
        request: StreamRequest,
        mut responses: StreamSender<EchoMessage>,
    ) -> Result<(), Status> {
        // `size` is the caller's choice, call after call: unbounded, one request could make
        // the server allocate as much as it asks for, and a message larger than the frame
        // limit could never be sent anyway. So it is bounded, and a larger one refused.
        if request.size > MAX_STREAM_MESSAGE_SIZE {
            return Err(Status::invalid_argument(format!(
                "size {} is over the limit of {MAX_STREAM_MESSAGE_SIZE} bytes",
                request.size
            )));
        }
        let payload = Bytes::from(vec![0xab; request.size as usize]);
        // The messages are made as the stream takes them, as many at a time as the credit
        // allows: the way to stream fast (tonic's side streams the same way, from an
        // iterator-like stream).
        responses.send_all((0..request.count).map(|_| EchoMessage { payload: payload.clone() })).await
    }

    async fn work(&self, _ctx: &mut Context, request: Work) -> Result<Digest, Status> {
        // Bounded for the same reason as `stream`'s size: the caller chooses it.
        if request.iterations > MAX_WORK_ITERATIONS {
            return Err(Status::invalid_argument(format!(
                "{} iterations is over the limit of {MAX_WORK_ITERATIONS}",
                request.iterations
            )));
        }
        Ok(Digest { value: work_digest(&request.payload, request.iterations) })
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

/// An echo server over TLS on a loopback port, in the current runtime, and a client of it (a CA and a certificate for
/// `localhost` made on the spot).
pub async fn tls_echo_client() -> EchoClient {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_fnv1a_chained_over_the_rounds() {
        assert_eq!(work_digest(b"", 0), 0);
        // One round over "a" is FNV-1a 64 of "a", a published test vector.
        assert_eq!(work_digest(b"a", 1), 0xaf63_dc4c_8601_ec8c);
        // Each round starts from the last one's hash.
        assert_ne!(work_digest(b"a", 2), work_digest(b"a", 1));
        assert_eq!(work_digest(&[0xab; 64], 3), work_digest(&[0xab; 64], 3));
    }
}
