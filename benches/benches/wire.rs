//! The frame codec alone, no I/O: encoding and decoding a request frame (64-byte and 64 KiB
//! bodies), and parsing header TLV fields (a request's usual header, and one with a deadline
//! and metadata); and the server's dispatch: finding a method's handler by its full name.
//!
//! Run with `cargo bench -p benches --bench wire`.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rpc_core::internals::wire::{Frame, FrameCodec, FrameKind};
use rpc_core::{ServerContext, Status};
use tokio_util::codec::{Decoder, Encoder};

/// A request frame as a generated client sends it: method, no deadline, no metadata.
fn request(body: usize) -> Frame {
    let mut frame = Frame::new(FrameKind::Request, 1_000);
    frame.header.method = Some(Bytes::from_static(b"/bench.v1.Echo/Echo"));
    frame.body = Bytes::from(vec![0xab; body]);
    frame
}

/// A request with a deadline and four metadata entries, as one with interceptors sends it.
fn rich_request() -> Frame {
    let mut frame = request(0);
    frame.header.timeout = Some(Duration::from_millis(1_500));
    frame.header.metadata.insert("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc");
    frame.header.metadata.insert("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    frame.header.metadata.insert("x-request-id", "6f1c9a1e-2b7d-4c55-9a43-0a2f5f1d8e11");
    frame.header.metadata.insert("accept-language", "en");
    frame
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::new().encode(frame, &mut buf).expect("encodes");
    buf
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/encode");
    for (name, body) in [("request_64B", 64), ("request_64KiB", 64 * 1024)] {
        let frame = request(body);
        let mut codec = FrameCodec::new();
        let mut buf = BytesMut::with_capacity(frame.encoded_len());
        group.throughput(Throughput::Bytes(frame.encoded_len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                codec.encode(&frame, &mut buf).expect("encodes");
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/decode");
    for (name, body) in [("request_64B", 64), ("request_64KiB", 64 * 1024)] {
        let wire = encoded(&request(body));
        let mut codec = FrameCodec::new();
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| codec.decode(&mut buf).expect("decodes").expect("a whole frame"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Decoding frames with empty bodies, so the header's TLV fields are most of the work.
fn header_tlv(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/header_tlv");
    for (name, frame) in [("method_only", request(0)), ("deadline_and_4_metadata", rich_request())] {
        let wire = encoded(&frame);
        let mut codec = FrameCodec::new();
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| codec.decode(&mut buf).expect("decodes").expect("a whole frame"),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A service with a realistic number of methods, for a route table of some size.
#[rpc_core::service(package = "bench.v1")]
pub trait Catalog {
    async fn get_item(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn list_items(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn create_item(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn update_item(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn delete_item(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn search_items(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn get_price(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn set_price(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn reserve_stock(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
    async fn release_stock(&self, ctx: &mut ServerContext, r: Item) -> Result<Item, Status>;
}

/// The catalog's one message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Item {
    /// Its id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

struct NoCatalog;

impl Catalog for NoCatalog {
    async fn get_item(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn list_items(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn create_item(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn update_item(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn delete_item(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn search_items(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn get_price(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn set_price(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn reserve_stock(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
    async fn release_stock(&self, _: &mut ServerContext, r: Item) -> Result<Item, Status> {
        Ok(r)
    }
}

/// The server's dispatch: the route table of a server with three services (15 methods, the
/// health service's included) and the lookup of a method name as it comes off the wire.
fn dispatch(c: &mut Criterion) {
    use rpc_core::codegen::Service;
    use rpc_core::health::{HealthReporter, HealthServer, HealthService};
    use rpc_core::internals::DispatchTable;
    use std::sync::Arc;

    let services: Vec<Arc<dyn Service>> = vec![
        Arc::new(benches::EchoServer::new(benches::EchoService)),
        Arc::new(CatalogServer::new(NoCatalog)),
        Arc::new(HealthServer::new(HealthService::new(HealthReporter::new()))),
    ];
    let table = DispatchTable::new(services);
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    for (name, path) in [
        ("known_method", &b"/bench.v1.Catalog/ReserveStock"[..]),
        ("unknown_method", &b"/bench.v1.Catalog/Teleport"[..]),
    ] {
        let path = Bytes::copy_from_slice(path);
        group.bench_function(name, |b| b.iter(|| table.routes(std::hint::black_box(&path))));
    }
    group.finish();
}

criterion_group!(benches, encode, decode, header_tlv, dispatch);
criterion_main!(benches);
