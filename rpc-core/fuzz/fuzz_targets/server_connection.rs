//! A whole server connection: a real server, serving services of every call kind over an
//! in-memory pipe, reads the preface and then arbitrary bytes, written in pieces whose sizes
//! the input chooses; the client side reads everything the server answers. The server must
//! not panic, and must close the connection soon after the input ends.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use rpc_core::transport::memory::{self, MemoryConnector};
use rpc_core::transport::{Address, Connector};
use rpc_core::{Context, Server, Status, StreamSender, Streaming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The golden vectors' unary service (docs/PROTOCOL.md §15), plus a server stream.
#[rpc_core::service(package = "helloworld")]
pub trait Greeter {
    async fn say_hello(&self, ctx: &mut Context, req: HelloRequest) -> Result<HelloReply, Status>;
    async fn say_hellos(
        &self,
        ctx: &mut Context,
        req: HelloRequest,
        replies: StreamSender<HelloReply>,
    ) -> Result<(), Status>;
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RouteNote {
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The golden vectors' streaming service, with a client stream beside it.
#[rpc_core::service(package = "routeguide")]
pub trait RouteGuide {
    async fn route_chat(
        &self,
        ctx: &mut Context,
        notes: Streaming<RouteNote>,
        replies: StreamSender<RouteNote>,
    ) -> Result<(), Status>;
    async fn record(&self, ctx: &mut Context, notes: Streaming<RouteNote>) -> Result<RouteNote, Status>;
}

struct Service;

impl Greeter for Service {
    async fn say_hello(&self, _ctx: &mut Context, req: HelloRequest) -> Result<HelloReply, Status> {
        Ok(HelloReply { message: format!("Hello {}", req.name) })
    }

    async fn say_hellos(
        &self,
        _ctx: &mut Context,
        req: HelloRequest,
        mut replies: StreamSender<HelloReply>,
    ) -> Result<(), Status> {
        // The count is the caller's to choose: bounded.
        for n in 0..req.name.len().min(16) {
            replies.send(HelloReply { message: n.to_string() }).await?;
        }
        Ok(())
    }
}

impl RouteGuide for Service {
    async fn route_chat(
        &self,
        _ctx: &mut Context,
        mut notes: Streaming<RouteNote>,
        mut replies: StreamSender<RouteNote>,
    ) -> Result<(), Status> {
        while let Some(note) = notes.message().await? {
            replies.send(note).await?;
        }
        Ok(())
    }

    async fn record(&self, _ctx: &mut Context, mut notes: Streaming<RouteNote>) -> Result<RouteNote, Status> {
        let mut count = 0;
        while notes.message().await?.is_some() {
            count += 1;
        }
        Ok(RouteNote { message: count.to_string() })
    }
}

struct Harness {
    runtime: Runtime,
    connector: MemoryConnector,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let (listener, connector) = memory::channel();
        let server = Server::builder()
            .add_service(GreeterServer::new(Service))
            .add_service(RouteGuideServer::new(Service))
            .serve_with_listener(listener, std::future::pending());
        runtime.spawn(server);
        Harness { runtime, connector }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let harness = harness();
    harness.runtime.block_on(async {
        let address: Address = "memory:0".parse().expect("address");
        let io = harness.connector.connect(&address).await.expect("connect");
        let (mut reader, mut writer) = tokio::io::split(io);
        let (&control, input) = data.split_first().unwrap_or((&0, &[]));
        let piece = usize::from(control) * 16 + 1;
        let write = async move {
            // The preface (docs/PROTOCOL.md §3), then the input.
            let _ = writer.write_all(&[0x89, b'R', b'P', b'C', b'\r', b'\n', 1, 0]).await;
            for chunk in input.chunks(piece) {
                if writer.write_all(chunk).await.is_err() {
                    break;
                }
            }
            let _ = writer.shutdown().await;
        };
        let read = async move {
            let mut sink = [0u8; 16 * 1024];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let both = async { tokio::join!(write, read) };
        tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .expect("the server closes the connection once the input has ended");
    });
});
