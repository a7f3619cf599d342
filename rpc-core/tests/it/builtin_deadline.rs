//! `Deadlines`: default timeouts, and a deadline carried through a chain of services.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpc_core::middleware::Deadlines;
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code, Server, ServerContext, Status};

use crate::common::eventually;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Hop {
    #[prost(string, tag = "1")]
    pub trail: String,
}

#[rpc_core::service(package = "test.v1")]
pub trait Relay {
    /// Calls the next service if there is one; the last one sleeps a long time.
    async fn hop(&self, ctx: &mut ServerContext, request: Hop) -> Result<Hop, Status>;
}

/// What the last service of the chain saw.
#[derive(Default)]
struct Seen {
    remaining: Mutex<Option<Option<Duration>>>,
    abandoned: AtomicUsize,
}

struct RelayService {
    next: Option<RelayClient>,
    seen: Arc<Seen>,
    /// Makes the next call from a task of its own, spawned in the call's context.
    spawn: bool,
}

struct Guard<'a>(&'a Seen, bool);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Relay for RelayService {
    async fn hop(&self, ctx: &mut ServerContext, request: Hop) -> Result<Hop, Status> {
        match &self.next {
            // No timeout of its own: only propagation can bound this call.
            Some(next) if self.spawn => {
                let next = next.clone();
                let hop = async move { next.hop(Hop { trail: request.trail + ">" }).await };
                rpc_core::middleware::spawn_in_call_context(hop).await.expect("the spawned task")
            }
            Some(next) => next.hop(Hop { trail: request.trail + ">" }).await,
            None => {
                *self.seen.remaining.lock().expect("lock") = Some(ctx.remaining());
                let mut guard = Guard(&self.seen, false);
                tokio::time::sleep(Duration::from_secs(30)).await;
                guard.1 = true;
                Ok(request)
            }
        }
    }
}

async fn serve(configure: impl FnOnce(ServerBuilder) -> ServerBuilder, service: RelayService) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = configure(Server::builder()).add_service(RelayServer::new(service));
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

/// A → B → C, each server and each hop's channel with `Deadlines` if `propagate`.
async fn chain(propagate: bool) -> (RelayClient, Arc<Seen>) {
    chain_spawning(propagate, false).await
}

/// [`chain`], with B making its call from a spawned task if `spawn`.
async fn chain_spawning(propagate: bool, spawn: bool) -> (RelayClient, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let with = |b: ServerBuilder| if propagate { b.interceptor(Deadlines::new()) } else { b };
    let channel = |addr: SocketAddr| async move {
        let builder = Channel::builder(addr);
        let builder = if propagate { builder.interceptor(Deadlines::new()) } else { builder };
        RelayClient::new(builder.connect().await.expect("connect"))
    };
    let c = serve(with, RelayService { next: None, seen: Arc::clone(&seen), spawn: false }).await;
    let b = serve(with, RelayService { next: Some(channel(c).await), seen: Arc::clone(&seen), spawn }).await;
    let a = serve(with, RelayService { next: Some(channel(b).await), seen: Arc::clone(&seen), spawn: false })
        .await;
    (channel(a).await, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_set_at_a_bounds_the_calls_b_and_c_make() {
    let (client, seen) = chain(true).await;
    let started = Instant::now();
    let status = client.hop(Hop::default()).timeout(Duration::from_millis(300)).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(10), "nobody waited for the 30 s sleep");
    let remaining = seen.remaining.lock().expect("lock").expect("C ran");
    let remaining = remaining.expect("C received a deadline it was never given directly");
    assert!(remaining <= Duration::from_millis(300), "C's deadline is A's, or earlier: {remaining:?}");
    eventually("C's handler is stopped at the deadline", || seen.abandoned.load(Ordering::SeqCst) == 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_reaches_calls_made_from_a_task_spawned_in_the_call_context() {
    let (client, seen) = chain_spawning(true, true).await;
    let status = client.hop(Hop::default()).timeout(Duration::from_millis(300)).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let remaining = seen.remaining.lock().expect("lock").expect("C ran");
    let remaining = remaining.expect("C received the deadline through B's spawned task");
    assert!(remaining <= Duration::from_millis(300), "C's deadline is A's, or earlier: {remaining:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_interceptor_the_deadline_stops_at_the_first_hop() {
    let (client, seen) = chain(false).await;
    let status = client.hop(Hop::default()).timeout(Duration::from_millis(200)).await.expect_err("deadline");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    eventually("C runs", || seen.remaining.lock().expect("lock").is_some()).await;
    assert_eq!(*seen.remaining.lock().expect("lock"), Some(None), "C had no deadline");
}

#[tokio::test]
async fn a_channel_default_timeout_applies_to_calls_without_one() {
    let seen = Arc::new(Seen::default());
    let addr = serve(|b| b, RelayService { next: None, seen: Arc::clone(&seen), spawn: false }).await;
    let channel = Channel::builder(addr)
        .interceptor(Deadlines::new().default_timeout(Duration::from_millis(150)))
        .connect()
        .await
        .expect("connect");
    let status = RelayClient::new(channel).hop(Hop::default()).await.expect_err("default timeout");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let remaining = seen.remaining.lock().expect("lock").expect("ran").expect("the server got the deadline");
    assert!(remaining <= Duration::from_millis(150), "{remaining:?}");
}

#[tokio::test]
async fn a_server_default_timeout_stops_calls_that_came_without_a_deadline() {
    let seen = Arc::new(Seen::default());
    let addr = serve(
        |b| b.interceptor(Deadlines::new().default_timeout(Duration::from_millis(150))),
        RelayService { next: None, seen: Arc::clone(&seen), spawn: false },
    )
    .await;
    let client = RelayClient::new(Channel::connect(addr).await.expect("connect"));
    let status = client.hop(Hop::default()).await.expect_err("server-side default");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    eventually("the handler is stopped", || seen.abandoned.load(Ordering::SeqCst) == 1).await;
}
