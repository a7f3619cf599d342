//! What interceptors cost per call: a 64-byte unary echo with no interceptors, with five
//! no-op interceptors on the server, and with five on each side.
//!
//! Client and server share one thread (a current-thread runtime), so a call costs no
//! cross-thread wake-ups and the difference the chains make stands out from the noise.
//!
//! Run with `cargo bench -p benches --bench interceptors`.

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use rpc_core::interceptor::{ClientContext, ClientInterceptor, ClientNext, ServerInterceptor, ServerNext};
use rpc_core::{Channel, Server, ServerContext, Status};
use tokio::net::TcpListener;

use benches::{EchoClient, EchoMessage, EchoServer, EchoService};

/// Does nothing but pass the call on.
struct Noop;

impl ServerInterceptor for Noop {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        next.run(ctx).await
    }
}

impl ClientInterceptor for Noop {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        next.run(ctx).await
    }
}

async fn setup(server_chain: usize, client_chain: usize) -> EchoClient {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut server = Server::builder();
    for _ in 0..server_chain {
        server = server.interceptor(Noop);
    }
    tokio::spawn(
        server
            .add_service(EchoServer::new(EchoService))
            .serve_with_listener(listener, std::future::pending()),
    );
    let mut channel = Channel::builder(addr);
    for _ in 0..client_chain {
        channel = channel.interceptor(Noop);
    }
    EchoClient::new(channel.connect().await.expect("connect"))
}

fn interceptors(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let payload = Bytes::from(vec![0xab; 64]);
    let mut group = c.benchmark_group("interceptor_chain");
    for (name, server_chain, client_chain) in
        [("none", 0, 0), ("5_server", 5, 0), ("5_server_5_client", 5, 5)]
    {
        let client = runtime.block_on(setup(server_chain, client_chain));
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                client.echo(EchoMessage { payload: payload.clone() }).await.expect("echo");
            })
        });
    }
    group.finish();
}

criterion_group!(benches, interceptors);
criterion_main!(benches);
