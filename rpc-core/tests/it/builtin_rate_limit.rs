//! `RateLimit` and `ConcurrencyLimit`: calls over the limits are refused without running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::middleware::{ConcurrencyLimit, RateLimit};
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code, Server, ServerContext, Status};

use crate::common::eventually;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Nap {
    #[prost(uint64, tag = "1")]
    pub millis: u64,
}

#[rpc_core::service(package = "test.v1")]
pub trait Limited {
    async fn a(&self, ctx: &mut ServerContext, request: Nap) -> Result<Nap, Status>;
    async fn b(&self, ctx: &mut ServerContext, request: Nap) -> Result<Nap, Status>;
}

#[derive(Clone, Default)]
struct LimitedService {
    ran: Arc<AtomicUsize>,
}

impl Limited for LimitedService {
    async fn a(&self, _ctx: &mut ServerContext, request: Nap) -> Result<Nap, Status> {
        self.ran.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(request.millis)).await;
        Ok(request)
    }

    async fn b(&self, ctx: &mut ServerContext, request: Nap) -> Result<Nap, Status> {
        self.a(ctx, request).await
    }
}

async fn serve(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> (SocketAddr, Arc<AtomicUsize>) {
    let service = LimitedService::default();
    let ran = Arc::clone(&service.ran);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = configure(Server::builder()).add_service(LimitedServer::new(service));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    (addr, ran)
}

/// Outcomes of `count` calls in a row: how many passed, and checks the others were refusals.
async fn outcomes(client: &LimitedClient, method: &str, count: usize, key: Option<&'static str>) -> usize {
    let mut passed = 0;
    for _ in 0..count {
        let result = match (method, key) {
            ("a", Some(key)) => client.a(Nap::default()).metadata("x-api-key", key).await,
            ("a", None) => client.a(Nap::default()).await,
            (_, _) => client.b(Nap::default()).await,
        };
        match result {
            Ok(_) => passed += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
                assert!(status.is_refused(), "a rate-limited call was not processed: {status:?}");
            }
        }
    }
    passed
}

#[tokio::test]
async fn calls_past_the_burst_are_refused_without_running() {
    // One token a minute, three at once: a run of five gets three through.
    let (addr, ran) = serve(|b| b.interceptor(RateLimit::per_minute(1).burst(3))).await;
    let client = LimitedClient::new(Channel::connect(addr).await.expect("connect"));
    assert_eq!(outcomes(&client, "a", 5, None).await, 3);
    assert_eq!(ran.load(Ordering::SeqCst), 3, "refused calls never reached the handler");
}

#[tokio::test]
async fn each_caller_key_has_its_own_buckets() {
    let (addr, _) = serve(|b| b.interceptor(RateLimit::per_minute(1).burst(2).per_caller("x-api-key"))).await;
    let client = LimitedClient::new(Channel::connect(addr).await.expect("connect"));
    assert_eq!(outcomes(&client, "a", 4, Some("alice")).await, 2);
    assert_eq!(outcomes(&client, "a", 4, Some("bob")).await, 2, "bob is not limited by alice's calls");
}

#[tokio::test]
async fn a_method_can_have_a_limit_of_its_own() {
    let (addr, _) =
        serve(|b| b.interceptor(RateLimit::per_minute(1).burst(3).method("/test.v1.Limited/B", 1, 1))).await;
    let client = LimitedClient::new(Channel::connect(addr).await.expect("connect"));
    assert_eq!(outcomes(&client, "b", 2, None).await, 1);
    assert_eq!(outcomes(&client, "a", 4, None).await, 3, "A keeps the default limit, and its own bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_concurrency_limit_calls_are_shed_and_later_ones_pass() {
    let limit = ConcurrencyLimit::new(2);
    let (addr, ran) = serve({
        let limit = limit.clone();
        move |b| b.interceptor(limit)
    })
    .await;
    let client = LimitedClient::new(Channel::connect(addr).await.expect("connect"));
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.a(Nap { millis: 500 }).await })
        })
        .collect();
    eventually("two calls are running", || ran.load(Ordering::SeqCst) == 2).await;
    assert_eq!(limit.in_flight(), 2);
    let status = client.a(Nap::default()).await.expect_err("shed");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.is_refused());
    for call in slow {
        call.await.expect("task").expect("the running calls finish");
    }
    client.a(Nap::default()).await.expect("room again");
    eventually("the slots are given back", || limit.in_flight() == 0).await;
}
