//! The built-in `Retry` interceptor over real sockets: retrying until success, only when safe,
//! within max attempts, the deadline and the budget; streams untouched.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::interceptor::{ClientContext, ClientInterceptor, ClientNext};
use rpc_core::middleware::{ConcurrencyLimit, Retry};
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender};
use tokio::sync::Notify;

use crate::common::eventually;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Attempt {
    /// The code to fail with while failures are left; 0 for `Unavailable`.
    #[prost(uint32, tag = "1")]
    pub code: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reply {
    /// How many calls of this method the server had seen, this one included.
    #[prost(uint64, tag = "1")]
    pub calls: u64,
}

/// A service whose calls fail while the server has failures left.
#[rpc_core::service(package = "retry.v1")]
pub trait Flaky {
    /// Idempotent in these tests: fails while failures are left.
    async fn read(&self, ctx: &mut ServerContext, request: Attempt) -> Result<Reply, Status>;
    /// Not idempotent: fails while failures are left.
    async fn write(&self, ctx: &mut ServerContext, request: Attempt) -> Result<Reply, Status>;
    /// Waits until released, then succeeds; holds the server's only call slot meanwhile.
    async fn hold(&self, ctx: &mut ServerContext, request: Attempt) -> Result<Reply, Status>;
    /// A stream that fails at once while failures are left.
    async fn watch(
        &self,
        ctx: &mut ServerContext,
        request: Attempt,
        out: StreamSender<Reply>,
    ) -> Result<(), Status>;
}

const READ: &str = "/retry.v1.Flaky/Read";

#[derive(Default)]
struct Counters {
    failures_left: AtomicUsize,
    reads: AtomicUsize,
    writes: AtomicUsize,
    holds: AtomicUsize,
    watches: AtomicUsize,
    release: Notify,
}

impl Counters {
    fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }

    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// Counts a call of a method; fails it if the server has failures left.
    fn call(&self, counter: &AtomicUsize, request: &Attempt) -> Result<Reply, Status> {
        let calls = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let failing =
            self.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if failing {
            let code = if request.code == 0 { Code::Unavailable } else { Code::from_u32(request.code) };
            return Err(Status::new(code, "failing on purpose"));
        }
        Ok(Reply { calls: calls as u64 })
    }
}

#[derive(Clone)]
struct FlakyService {
    counters: Arc<Counters>,
}

impl Flaky for FlakyService {
    async fn read(&self, _ctx: &mut ServerContext, request: Attempt) -> Result<Reply, Status> {
        self.counters.call(&self.counters.reads, &request)
    }

    async fn write(&self, _ctx: &mut ServerContext, request: Attempt) -> Result<Reply, Status> {
        self.counters.call(&self.counters.writes, &request)
    }

    async fn hold(&self, _ctx: &mut ServerContext, _request: Attempt) -> Result<Reply, Status> {
        let calls = self.counters.holds.fetch_add(1, Ordering::SeqCst) + 1;
        self.counters.release.notified().await;
        Ok(Reply { calls: calls as u64 })
    }

    async fn watch(
        &self,
        _ctx: &mut ServerContext,
        request: Attempt,
        out: StreamSender<Reply>,
    ) -> Result<(), Status> {
        let reply = self.counters.call(&self.counters.watches, &request)?;
        let mut out = out;
        out.send(reply).await
    }
}

/// Serves a `Flaky` service whose first `failures` calls fail.
async fn serve(
    failures: usize,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> (SocketAddr, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    counters.failures_left.store(failures, Ordering::SeqCst);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = FlakyServer::new(FlakyService { counters: Arc::clone(&counters) });
    tokio::spawn(
        configure(Server::builder())
            .add_service(service)
            .serve_with_listener(listener, std::future::pending()),
    );
    (addr, counters)
}

/// A retry policy with short delays, `read` idempotent and `write` not.
fn quick_retry() -> Retry {
    Retry::new()
        .initial_backoff(Duration::from_millis(5))
        .max_backoff(Duration::from_millis(20))
        .idempotent(READ)
}

async fn client(addr: SocketAddr, retry: Retry) -> FlakyClient {
    FlakyClient::new(Channel::builder(addr).interceptor(retry).connect().await.expect("connect"))
}

#[tokio::test]
async fn an_idempotent_call_is_retried_until_it_succeeds() {
    let (addr, counters) = serve(2, |b| b).await;
    let client = client(addr, quick_retry()).await;
    let reply = client.read(Attempt::default()).await.expect("the third attempt succeeds");
    assert_eq!(reply.calls, 3);
    assert_eq!(counters.reads(), 3, "two failures, then the success");
}

#[tokio::test]
async fn a_whole_service_can_be_marked_idempotent() {
    let (addr, counters) = serve(1, |b| b).await;
    let retry = Retry::new().initial_backoff(Duration::from_millis(5)).idempotent("/retry.v1.Flaky/*");
    let client = client(addr, retry).await;
    client.write(Attempt::default()).await.expect("retried once");
    assert_eq!(counters.writes(), 2);
}

#[tokio::test]
async fn max_attempts_bounds_the_calls_the_server_sees() {
    let (addr, counters) = serve(usize::MAX, |b| b).await;
    let client4 = client(addr, quick_retry().max_attempts(4)).await;
    let status = client4.read(Attempt::default()).await.expect_err("always failing");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(counters.reads(), 4, "max_attempts(4)");

    let by_default =
        client(addr, Retry::new().initial_backoff(Duration::from_millis(5)).idempotent(READ)).await;
    by_default.read(Attempt::default()).await.expect_err("always failing");
    assert_eq!(counters.reads(), 4 + Retry::DEFAULT_MAX_ATTEMPTS as usize, "3 attempts by default");
}

#[tokio::test]
async fn only_the_configured_codes_are_retried() {
    let (addr, counters) = serve(1, |b| b).await;
    let client = client(addr, quick_retry()).await;
    let not_found = Attempt { code: Code::NotFound.as_u32() };
    let status = client.read(not_found.clone()).await.expect_err("NotFound is not retried by default");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(counters.reads(), 1);

    counters.failures_left.store(1, Ordering::SeqCst);
    let client = self::client(addr, quick_retry().codes([Code::NotFound])).await;
    client.read(not_found).await.expect("retried once NotFound is retryable");
    assert_eq!(counters.reads(), 3);
}

#[tokio::test]
async fn a_non_idempotent_call_is_not_retried() {
    let (addr, counters) = serve(1, |b| b).await;
    let client = client(addr, quick_retry()).await;
    let status = client.write(Attempt::default()).await.expect_err("not retried");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(counters.writes(), 1, "the write may have been processed: it is not sent again");
}

/// Sits inside the retry: wakes the held call once it sees an attempt the server refused.
struct ReleaseOnRefusal {
    counters: Arc<Counters>,
    refused: Arc<AtomicUsize>,
}

impl ClientInterceptor for ReleaseOnRefusal {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let result = next.run(ctx).await;
        if result.as_ref().is_err_and(Status::is_refused) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.counters.release.notify_one();
        }
        result
    }
}

#[tokio::test]
async fn a_refused_call_is_retried_by_default_whatever_its_code_and_method() {
    // One call at a time: while `hold` runs, the server sheds other calls unprocessed. (A
    // connection limit would not do: the client waits for a slot under it instead.)
    let (addr, counters) = serve(0, |b| b.interceptor(ConcurrencyLimit::new(1))).await;
    let refused = Arc::new(AtomicUsize::new(0));
    // Default codes (only `Unavailable`): the refusal is `ResourceExhausted`.
    let retry = quick_retry().max_attempts(20);
    let channel = Channel::builder(addr)
        .interceptor(retry)
        .interceptor(ReleaseOnRefusal { counters: Arc::clone(&counters), refused: Arc::clone(&refused) })
        .connect()
        .await
        .expect("connect");
    let client = FlakyClient::new(channel);
    let holder = tokio::spawn({
        let client = client.clone();
        async move { client.hold(Attempt::default()).await }
    });
    eventually("the hold call started", || counters.holds.load(Ordering::SeqCst) == 1).await;

    let reply = client.write(Attempt::default()).await.expect("retried after the refusal");
    assert!(refused.load(Ordering::SeqCst) >= 1, "the first attempt was refused");
    assert_eq!((reply.calls, counters.writes()), (1, 1), "the handler ran once");
    holder.await.expect("holder task").expect("hold call");
}

#[tokio::test]
async fn the_deadline_stops_retrying_before_the_backoff_would_pass_it() {
    let (addr, counters) = serve(usize::MAX, |b| b).await;
    // A constant 600 ms backoff: after a retry at about 600 ms, a second one would end past
    // the 1 s deadline.
    let retry = Retry::new()
        .max_attempts(10)
        .initial_backoff(Duration::from_millis(600))
        .backoff_multiplier(1.0)
        .jitter(0.0)
        .idempotent(READ);
    let client = client(addr, retry).await;
    let status = client.read(Attempt::default()).timeout(Duration::from_secs(1)).await.expect_err("failing");
    assert_eq!(status.code(), Code::Unavailable, "the last error, not a deadline slept into: {status}");
    let reads = counters.reads();
    assert!((1..=2).contains(&reads), "stopped early, not after 10 attempts: {reads}");
}

#[tokio::test]
async fn an_exhausted_budget_stops_retries() {
    let (addr, counters) = serve(usize::MAX, |b| b).await;
    // No floor; each call adds half a retry to the budget.
    let retry = quick_retry()
        .max_attempts(10)
        .budget_min_per_second(0)
        .budget_ratio(0.5)
        .budget_window(Duration::from_secs(60));
    let client = client(addr, retry).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        client.read(Attempt::default()).await.expect_err("always failing");
        seen.push(counters.reads());
    }
    // Calls 1..4 may retry 0.5, 1, 1.5, 2 times in all: 1, 2, 1, 2 attempts.
    assert_eq!(seen, [1, 3, 4, 6]);
}

/// Logs the outcome of each run of the rest of the chain, as `name: CODE`.
struct Outcomes {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

impl ClientInterceptor for Outcomes {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let result = next.run(ctx).await;
        let code = result.as_ref().err().map_or(Code::Ok, Status::code);
        self.log.lock().expect("log").push(format!("{}: {code}", self.name));
        result
    }
}

#[tokio::test]
async fn streams_pass_through_untouched() {
    let (addr, counters) = serve(1, |b| b).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let channel = Channel::builder(addr)
        .interceptor(Outcomes { name: "outer", log: Arc::clone(&log) })
        .interceptor(Retry::new().initial_backoff(Duration::from_millis(5)).all_idempotent())
        .interceptor(Outcomes { name: "inner", log: Arc::clone(&log) })
        .connect()
        .await
        .expect("connect");
    let client = FlakyClient::new(channel);
    let failed = match client.watch(Attempt::default()).await {
        Err(status) => status,
        Ok(mut stream) => stream.message().await.expect_err("the first call fails"),
    };
    assert_eq!(failed.code(), Code::Unavailable);
    // The chain ends after the caller has seen the stream fail.
    let outer_done = || log.lock().expect("log").iter().any(|entry| entry.starts_with("outer"));
    eventually("the chain has ended", outer_done).await;
    assert_eq!(*log.lock().expect("log"), ["inner: UNAVAILABLE", "outer: UNAVAILABLE"], "one attempt");
    assert_eq!(counters.watches.load(Ordering::SeqCst), 1, "a stream is not sent again");
}

/// Refuses the first call it sees, unprocessed, and lets the rest in.
struct RefuseFirst(std::sync::atomic::AtomicBool);

impl rpc_core::interceptor::ServerInterceptor for RefuseFirst {
    async fn intercept(
        &self,
        ctx: &mut ServerContext,
        mut next: rpc_core::interceptor::ServerNext<'_>,
    ) -> Result<(), Status> {
        if !self.0.swap(true, Ordering::SeqCst) {
            return Err(Status::resource_exhausted("not now").refused());
        }
        next.run(ctx).await
    }
}

#[tokio::test]
async fn retry_refused_false_leaves_a_refusal_to_the_codes_and_idempotency() {
    let (addr, counters) =
        serve(0, |b| b.interceptor(RefuseFirst(std::sync::atomic::AtomicBool::new(false)))).await;
    let strict = client(addr, quick_retry().retry_refused(false)).await;
    let status = strict.write(Attempt::default()).await.expect_err("the refusal is returned");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.is_refused());
    assert_eq!(counters.writes(), 0, "the handler never ran");

    let (addr, counters) =
        serve(0, |b| b.interceptor(RefuseFirst(std::sync::atomic::AtomicBool::new(false)))).await;
    let client = client(addr, Retry::new().initial_backoff(Duration::from_millis(5))).await;
    let reply = client.write(Attempt::default()).await.expect("the refusal is retried by default");
    assert_eq!((reply.calls, counters.writes()), (1, 1), "sent again once, run once");
}
