//! The built-in `CircuitBreaker` over real sockets: tripping on consecutive failures and on a
//! failure ratio, failing fast while open, probing when half-open, scopes, and the callback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::middleware::{BreakerScope, BreakerState, CircuitBreaker};
use rpc_core::{Channel, Code, Server, ServerContext, Status};

use crate::common::eventually;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    /// The code to fail with; 0 to succeed.
    #[prost(uint32, tag = "1")]
    pub code: u32,
}

/// Two methods that fail with the code asked for.
#[rpc_core::service(package = "breaker.v1")]
pub trait Switch {
    /// Fails with `request.code`, or succeeds if it is 0.
    async fn alpha(&self, ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status>;
    /// The same, counted apart.
    async fn beta(&self, ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status>;
    /// Never answers: a call that stays under way.
    async fn gate(&self, ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status>;
}

const ALPHA: &str = "/breaker.v1.Switch/Alpha";
const BETA: &str = "/breaker.v1.Switch/Beta";

#[derive(Default)]
struct Calls {
    alpha: AtomicUsize,
    beta: AtomicUsize,
    gate: AtomicUsize,
}

impl Calls {
    fn alpha(&self) -> usize {
        self.alpha.load(Ordering::SeqCst)
    }

    fn beta(&self) -> usize {
        self.beta.load(Ordering::SeqCst)
    }

    fn gate(&self) -> usize {
        self.gate.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct SwitchService {
    calls: Arc<Calls>,
}

fn answer(request: Ping) -> Result<Ping, Status> {
    match request.code {
        0 => Ok(request),
        code => Err(Status::new(Code::from_u32(code), "failing on purpose")),
    }
}

impl Switch for SwitchService {
    async fn alpha(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
        self.calls.alpha.fetch_add(1, Ordering::SeqCst);
        answer(request)
    }

    async fn beta(&self, _ctx: &mut ServerContext, request: Ping) -> Result<Ping, Status> {
        self.calls.beta.fetch_add(1, Ordering::SeqCst);
        answer(request)
    }

    async fn gate(&self, _ctx: &mut ServerContext, _request: Ping) -> Result<Ping, Status> {
        self.calls.gate.fetch_add(1, Ordering::SeqCst);
        std::future::pending().await
    }
}

async fn serve() -> (SocketAddr, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = SwitchServer::new(SwitchService { calls: Arc::clone(&calls) });
    tokio::spawn(
        Server::builder().add_service(service).serve_with_listener(listener, std::future::pending()),
    );
    (addr, calls)
}

async fn client(addr: SocketAddr, breaker: &CircuitBreaker) -> SwitchClient {
    SwitchClient::new(Channel::builder(addr).interceptor(breaker.clone()).connect().await.expect("connect"))
}

const OK: Ping = Ping { code: 0 };
const FAIL: Ping = Ping { code: Code::Unavailable as u32 };

/// Trips on `n` consecutive failures only, and stays open for `open_for`.
fn consecutive(n: u32, open_for: Duration) -> CircuitBreaker {
    CircuitBreaker::new().consecutive_failures(n).window(0).open_for(open_for)
}

/// Waits until the breaker for `key` reports `state`, failing after ten seconds.
async fn wait_for(breaker: &CircuitBreaker, key: &str, state: BreakerState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while breaker.state(key) != state {
        assert!(tokio::time::Instant::now() < deadline, "{key} never became {state:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_then_fails_fast() {
    let (addr, calls) = serve().await;
    let breaker = consecutive(3, Duration::from_secs(60));
    let client = client(addr, &breaker).await;
    let key = addr.to_string();

    for _ in 0..2 {
        client.alpha(FAIL).await.expect_err("failing");
    }
    client.alpha(OK).await.expect("a success resets the count");
    for _ in 0..2 {
        client.alpha(FAIL).await.expect_err("failing");
    }
    assert_eq!(breaker.state(&key), BreakerState::Closed, "two in a row do not trip it");
    client.alpha(FAIL).await.expect_err("failing");
    assert_eq!(breaker.state(&key), BreakerState::Open);
    assert_eq!(calls.alpha(), 6);

    for _ in 0..5 {
        let status = client.alpha(OK).await.expect_err("failed fast");
        assert_eq!(status.code(), Code::Unavailable);
        assert!(
            status.message().contains("circuit breaker") && status.message().contains("open"),
            "{status}"
        );
    }
    client.beta(OK).await.expect_err("per endpoint: every method is failed fast");
    assert_eq!((calls.alpha(), calls.beta()), (6, 0), "nothing more reached the server");
}

#[tokio::test]
async fn only_the_configured_codes_count_as_failures() {
    let (addr, calls) = serve().await;
    let breaker = consecutive(2, Duration::from_secs(60));
    let client = client(addr, &breaker).await;
    let not_found = Ping { code: Code::NotFound as u32 };
    for _ in 0..5 {
        client.alpha(not_found.clone()).await.expect_err("not found");
    }
    assert_eq!(breaker.state(&addr.to_string()), BreakerState::Closed, "the server answered");
    assert_eq!(calls.alpha(), 5);

    let strict = consecutive(2, Duration::from_secs(60)).failure_codes([Code::NotFound]);
    let client = self::client(addr, &strict).await;
    for _ in 0..2 {
        client.alpha(not_found.clone()).await.expect_err("not found");
    }
    assert_eq!(strict.state(&addr.to_string()), BreakerState::Open);
}

#[tokio::test]
async fn the_breaker_half_opens_after_the_open_period_and_closes_after_successful_probes() {
    let (addr, calls) = serve().await;
    let breaker = consecutive(2, Duration::from_millis(200)).probes(2);
    let client = client(addr, &breaker).await;
    let key = addr.to_string();
    for _ in 0..2 {
        client.alpha(FAIL).await.expect_err("failing");
    }
    assert_eq!(breaker.state(&key), BreakerState::Open);

    wait_for(&breaker, &key, BreakerState::HalfOpen).await;
    client.alpha(OK).await.expect("the first probe goes through");
    assert_eq!(breaker.state(&key), BreakerState::HalfOpen, "one probe of two is not enough");
    client.alpha(OK).await.expect("the second probe goes through");
    assert_eq!(breaker.state(&key), BreakerState::Closed);
    assert_eq!(calls.alpha(), 4);

    client.alpha(OK).await.expect("closed again: calls go through");
    assert_eq!(calls.alpha(), 5);
}

#[tokio::test]
async fn a_half_open_breaker_fails_fast_beyond_its_probes_and_frees_a_cancelled_probes_slot() {
    let (addr, calls) = serve().await;
    let breaker = consecutive(1, Duration::from_millis(100)).probes(1);
    let client = client(addr, &breaker).await;
    let key = addr.to_string();
    client.alpha(FAIL).await.expect_err("trips it");
    wait_for(&breaker, &key, BreakerState::HalfOpen).await;

    // The only probe is under way, held by the server.
    let probe = tokio::spawn({
        let client = client.clone();
        async move { client.gate(OK).await }
    });
    eventually("the probe reached the server", || calls.gate() == 1).await;
    let status = client.alpha(OK).await.expect_err("no probe slot left");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("half-open"), "{status}");
    assert_eq!(calls.alpha(), 1);

    // Cancelled, the probe gives its slot back: the next call is the probe.
    probe.abort();
    let _ = probe.await;
    client.alpha(OK).await.expect("the next probe goes through");
    assert_eq!(breaker.state(&key), BreakerState::Closed);
    assert_eq!(calls.alpha(), 2);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_breaker() {
    let (addr, calls) = serve().await;
    let breaker = consecutive(2, Duration::from_millis(200)).probes(2);
    let client = client(addr, &breaker).await;
    let key = addr.to_string();
    for _ in 0..2 {
        client.alpha(FAIL).await.expect_err("failing");
    }
    wait_for(&breaker, &key, BreakerState::HalfOpen).await;
    client.alpha(OK).await.expect("a good probe");
    client.alpha(FAIL).await.expect_err("a failed probe");
    assert_eq!(breaker.state(&key), BreakerState::Open, "any failed probe reopens it");
    assert_eq!(calls.alpha(), 4);
    client.alpha(OK).await.expect_err("open again: failed fast");
    assert_eq!(calls.alpha(), 4, "the server saw no more calls");

    wait_for(&breaker, &key, BreakerState::HalfOpen).await;
    client.alpha(OK).await.expect("probing again after another open period");
}

#[tokio::test]
async fn the_breaker_trips_on_a_failure_ratio_once_the_window_has_enough_calls() {
    let (addr, calls) = serve().await;
    let breaker = CircuitBreaker::new()
        .consecutive_failures(0)
        .window(10)
        .min_calls(10)
        .failure_ratio(0.5)
        .open_for(Duration::from_secs(60));
    let client = client(addr, &breaker).await;
    let key = addr.to_string();
    // Never two failures in a row: only the ratio can trip it.
    for n in 0..9 {
        let _ = client.alpha(if n % 2 == 0 { FAIL } else { OK }).await;
    }
    assert_eq!(breaker.state(&key), BreakerState::Closed, "5 failures in 9 calls, but fewer than 10 calls");
    client.alpha(OK).await.expect("the tenth call");
    assert_eq!(breaker.state(&key), BreakerState::Open, "5 failures in 10 calls reach the ratio");
    client.alpha(OK).await.expect_err("failed fast");
    assert_eq!(calls.alpha(), 10);
}

#[tokio::test]
async fn the_failure_ratio_is_over_the_most_recent_calls_only() {
    let (addr, calls) = serve().await;
    let breaker = CircuitBreaker::new().consecutive_failures(0).window(4).min_calls(4).failure_ratio(0.5);
    let client = client(addr, &breaker).await;
    let key = addr.to_string();
    // One failure in four, over six windows' worth of calls: below the ratio.
    for n in 0..24 {
        let _ = client.alpha(if n % 4 == 0 { FAIL } else { OK }).await;
    }
    assert_eq!(breaker.state(&key), BreakerState::Closed);
    // Two failures in the last four calls reach it, however many successes came before.
    client.alpha(FAIL).await.expect_err("failing");
    assert_eq!(breaker.state(&key), BreakerState::Closed, "one failure in the last four");
    client.alpha(FAIL).await.expect_err("failing");
    assert_eq!(breaker.state(&key), BreakerState::Open, "two failures in the last four");
    assert_eq!(calls.alpha(), 26);
}

#[tokio::test]
async fn per_method_scope_keeps_methods_apart() {
    let (addr, calls) = serve().await;
    let breaker = consecutive(2, Duration::from_secs(60)).scope(BreakerScope::Method);
    let client = client(addr, &breaker).await;
    for _ in 0..2 {
        client.alpha(FAIL).await.expect_err("failing");
    }
    assert_eq!(breaker.state(ALPHA), BreakerState::Open);
    assert_eq!(breaker.state(BETA), BreakerState::Closed);
    assert_eq!(breaker.state(&addr.to_string()), BreakerState::Closed, "no endpoint breaker");

    client.alpha(OK).await.expect_err("alpha is failed fast");
    for _ in 0..3 {
        client.beta(OK).await.expect("beta still goes through");
    }
    assert_eq!((calls.alpha(), calls.beta()), (2, 3));
}

#[tokio::test]
async fn the_state_change_callback_sees_every_transition() {
    type Seen = Arc<Mutex<Vec<(String, BreakerState, BreakerState)>>>;
    let seen = Seen::default();
    let (addr, _calls) = serve().await;
    let breaker = consecutive(1, Duration::from_millis(150)).probes(1).on_state_change({
        let seen = Arc::clone(&seen);
        move |key, from, to| seen.lock().expect("seen").push((key.to_owned(), from, to))
    });
    let client = client(addr, &breaker).await;
    let key = addr.to_string();

    client.alpha(FAIL).await.expect_err("trips it");
    wait_for(&breaker, &key, BreakerState::HalfOpen).await;
    client.alpha(FAIL).await.expect_err("a failed probe");
    wait_for(&breaker, &key, BreakerState::HalfOpen).await;
    client.alpha(OK).await.expect("a good probe");

    use BreakerState::{Closed, HalfOpen, Open};
    let expected: Vec<_> =
        [(Closed, Open), (Open, HalfOpen), (HalfOpen, Open), (Open, HalfOpen), (HalfOpen, Closed)]
            .into_iter()
            .map(|(from, to)| (key.clone(), from, to))
            .collect();
    assert_eq!(*seen.lock().expect("seen"), expected);
}
