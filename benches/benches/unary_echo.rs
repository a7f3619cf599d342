//! One unary echo call at a time, client and server in one process: in clear, and over TLS.
//!
//! Run with `cargo bench -p benches --bench unary_echo`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rpc_core::Channel;

use benches::{EchoClient, EchoMessage, spawn_echo_server, tls_echo_client};

fn unary_echo(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (plain, tls) = runtime.block_on(async {
        let addr = spawn_echo_server().await.expect("server");
        (EchoClient::new(Channel::connect(addr).await.expect("connect")), tls_echo_client().await)
    });
    let payload = Bytes::from(vec![0xab; 64]);

    let mut group = c.benchmark_group("unary_echo");
    group.throughput(Throughput::Elements(1));
    for (name, client) in [("64B", &plain), ("64B_tls", &tls)] {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let reply = client.echo(EchoMessage { payload: payload.clone() }).await.expect("echo");
                debug_assert_eq!(reply.payload.len(), 64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, unary_echo);
criterion_main!(benches);
