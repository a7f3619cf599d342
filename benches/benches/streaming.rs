//! Throughput of one server stream over one loopback connection: messages per second for
//! 64-byte messages, bytes per second for 64 KiB messages; in clear and over TLS.
//!
//! Run with `cargo bench -p benches --bench streaming`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rpc_core::Channel;

use benches::{EchoClient, StreamRequest, spawn_echo_server, tls_echo_client};

fn streaming(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (plain, tls) = runtime.block_on(async {
        let addr = spawn_echo_server().await.expect("server");
        (EchoClient::new(Channel::connect(addr).await.expect("connect")), tls_echo_client().await)
    });

    let mut group = c.benchmark_group("server_stream");
    for (name, client, count, size, throughput) in [
        ("64B", &plain, 10_000u64, 64u64, Throughput::Elements(10_000)),
        ("64KiB", &plain, 1_000, 64 * 1024, Throughput::Bytes(1_000 * 64 * 1024)),
        ("64B_tls", &tls, 10_000, 64, Throughput::Elements(10_000)),
        ("64KiB_tls", &tls, 1_000, 64 * 1024, Throughput::Bytes(1_000 * 64 * 1024)),
    ] {
        group.throughput(throughput);
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let mut stream = client.stream(StreamRequest { count, size }).await.expect("open");
                let mut received = 0;
                while let Some(message) = stream.message().await.expect("message") {
                    received += message.payload.len() as u64;
                }
                assert_eq!(received, count * size);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, streaming);
criterion_main!(benches);
