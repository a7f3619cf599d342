//! What the HTTP/JSON gateway adds to a small unary call: `bench.v1.Echo/Echo` with a 16-byte
//! payload, called directly (a `Channel`, the binary protocol) and through the gateway
//! (`POST /bench.v1.Echo/Echo` with JSON, over a kept-alive HTTP/1.1 connection), both on
//! loopback in one process under the default multi-thread runtime.
//!
//! ```text
//! cargo run --release -p benches --bin gateway            # the full run (about 10 s)
//! cargo run -p benches --bin gateway -- --quick           # a smoke run, as CI does
//! ```
//!
//! It prints a Markdown table: latency percentiles of sequential calls on one connection,
//! and the throughput of `CONCURRENCY` callers, each on a connection of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use benches::{EchoClient, EchoMessage, EchoServer, EchoService};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rpc_core::{Channel, Server};
use rpc_dynamic::Schema;
use rpc_gateway::Gateway;
use tokio::net::TcpListener;

/// Callers at once in the throughput runs.
const CONCURRENCY: usize = 32;

/// The payload: 16 bytes (base64 in the JSON).
const PAYLOAD: [u8; 16] = [7; 16];
const JSON_BODY: &str = r#"{"payload":"BwcHBwcHBwcHBwcHBwcHBw=="}"#;

/// How long each part runs.
struct Plan {
    warmup: usize,
    sequential: usize,
    throughput_for: Duration,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().skip(1).any(|arg| arg == "--quick");
    let plan = if quick {
        Plan { warmup: 50, sequential: 200, throughput_for: Duration::from_millis(200) }
    } else {
        Plan { warmup: 5_000, sequential: 20_000, throughput_for: Duration::from_secs(3) }
    };

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_listener(listener, std::future::pending()),
    );

    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let schema = Schema::from_protos(&[proto.join("bench.proto")], &[proto])?;
    let gateway =
        Gateway::builder(schema).upstream("bench.v1.Echo", Channel::connect(upstream).await?).build()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let http = listener.local_addr()?;
    tokio::spawn(gateway.serve(listener, std::future::pending()));

    // Sequential latency.
    let client = EchoClient::new(Channel::connect(upstream).await?);
    let message = EchoMessage { payload: Bytes::from_static(&PAYLOAD) };
    for _ in 0..plan.warmup {
        client.echo(message.clone()).await?;
    }
    let mut direct = histogram();
    for _ in 0..plan.sequential {
        let started = Instant::now();
        client.echo(message.clone()).await?;
        record(&mut direct, started);
    }
    let mut sender = http_connection(http).await?;
    for _ in 0..plan.warmup {
        post(&mut sender, http).await?;
    }
    let mut through = histogram();
    for _ in 0..plan.sequential {
        let started = Instant::now();
        post(&mut sender, http).await?;
        record(&mut through, started);
    }

    // Throughput: CONCURRENCY callers for a while.
    let direct_rate = {
        let client = EchoClient::new(Channel::connect(upstream).await?);
        let message = message.clone();
        rate(plan.throughput_for, move |_| {
            let client = client.clone();
            let message = message.clone();
            async move { client.echo(message).await.map(drop).map_err(|s| s.to_string()) }
        })
        .await?
    };
    let mut senders = Vec::new();
    for _ in 0..CONCURRENCY {
        senders.push(tokio::sync::Mutex::new(http_connection(http).await?));
    }
    let senders = std::sync::Arc::new(senders);
    let gateway_rate = rate(plan.throughput_for, move |worker| {
        let senders = std::sync::Arc::clone(&senders);
        async move {
            let mut sender = senders[worker].lock().await;
            post(&mut sender, http).await.map_err(|e| e.to_string())
        }
    })
    .await?;

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!("| path | p50 µs | p99 µs | p99.9 µs | calls/s ({CONCURRENCY} callers) |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| direct (`Channel`, binary protocol) | {:.1} | {:.1} | {:.1} | {:.0} |",
        us(&direct, 0.5),
        us(&direct, 0.99),
        us(&direct, 0.999),
        direct_rate
    );
    println!(
        "| through the gateway (HTTP/1.1 + JSON) | {:.1} | {:.1} | {:.1} | {:.0} |",
        us(&through, 0.5),
        us(&through, 0.99),
        us(&through, 0.999),
        gateway_rate
    );
    println!(
        "\nadded by the gateway at p50: {:.1} µs; {} sequential calls each{}",
        us(&through, 0.5) - us(&direct, 0.5),
        plan.sequential,
        if quick { " (--quick: not a measurement)" } else { "" }
    );
    Ok(())
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn record(histogram: &mut Histogram<u64>, started: Instant) {
    let _ = histogram.record(started.elapsed().as_nanos() as u64);
}

async fn http_connection(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One call through the gateway; an error unless it answers 200.
async fn post(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    sender.ready().await?;
    let request = hyper::Request::post("/bench.v1.Echo/Echo")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(JSON_BODY.as_bytes())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != 200 || body.as_ref() != JSON_BODY.as_bytes() {
        return Err(format!("unexpected answer {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(())
}

/// Calls a second: `CONCURRENCY` workers, each calling `call(worker)` one call after
/// another for `length`.
async fn rate<F, Fut>(length: Duration, call: F) -> Result<f64, String>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        let call = call.clone();
        tasks.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < deadline {
                call(worker).await?;
                calls += 1;
            }
            Ok::<u64, String>(calls)
        });
    }
    let mut total = 0u64;
    while let Some(done) = tasks.join_next().await {
        total += done.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
