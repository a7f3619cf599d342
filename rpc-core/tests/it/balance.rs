//! Balanced channels over real servers: policies, failover, ejection and recovery, following
//! the registry, health checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rpc_core::balance::Policy;
use rpc_core::discovery::{Instance, MemoryRegistry, StaticRegistry};
use rpc_core::interceptor::{ServerInterceptor, ServerNext};
use rpc_core::server::{Registration, ServerBuilder};
use rpc_core::{Channel, Code, ServerContext, Status};
use tokio::net::TcpListener;

use crate::common::{self, Echo, Running, Sleep, TestClient};

const SERVICE: &str = "test.v1.Test";

/// Tags every response with the name of the instance that served it.
struct Tag(&'static str);

impl ServerInterceptor for Tag {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        ctx.response_metadata_mut().insert("x-instance", self.0);
        next.run(ctx).await
    }
}

/// A test server named `name`, on `listener`.
async fn instance_on(
    name: &'static str,
    listener: TcpListener,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Running {
    common::serve_on(listener, |b| configure(b.interceptor(Tag(name)))).await
}

async fn instance(name: &'static str) -> Running {
    instance_on(name, TcpListener::bind("127.0.0.1:0").await.expect("bind"), |b| b).await
}

/// Which instance served an echo call.
async fn served_by(client: &TestClient) -> Result<String, Status> {
    let response = client.echo(Echo::default()).full().await?;
    Ok(response.metadata().get_str("x-instance").unwrap_or("?").to_owned())
}

async fn tally(client: &TestClient, calls: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..calls {
        *counts.entry(served_by(client).await.expect("call")).or_insert(0) += 1;
    }
    counts
}

fn fixed(instances: &[(&Running, u32)]) -> StaticRegistry {
    instances.iter().fold(StaticRegistry::new(), |registry, (running, weight)| {
        registry.with_instance(Instance::new(SERVICE, running.addr.to_string()).with_weight(*weight))
    })
}

#[tokio::test]
async fn weighted_round_robin_spreads_calls_by_weight_over_real_servers() {
    let (a, b, c) = (instance("a").await, instance("b").await, instance("c").await);
    let registry = fixed(&[(&a, 5), (&b, 1), (&c, 1)]);
    let channel = Channel::balanced(registry, SERVICE).connect().await.expect("connect");
    let client = TestClient::new(channel);
    // The smooth sequence for 5, 1, 1 repeats every 7 calls: exact counts.
    let counts = tally(&client, 700).await;
    assert_eq!(counts, BTreeMap::from([("a".into(), 500), ("b".into(), 100), ("c".into(), 100)]));
}

#[tokio::test]
async fn round_robin_and_random_use_every_instance() {
    let (a, b, c) = (instance("a").await, instance("b").await, instance("c").await);
    for policy in [Policy::RoundRobin, Policy::Random, Policy::PowerOfTwoChoices] {
        let registry = fixed(&[(&a, 100), (&b, 100), (&c, 100)]);
        let channel =
            Channel::balanced(registry, SERVICE).policy(policy.clone()).connect().await.expect("connect");
        let counts = tally(&TestClient::new(channel), 300).await;
        assert_eq!(counts.len(), 3, "{policy:?}: {counts:?}");
        assert!(counts.values().all(|&n| n >= 50), "{policy:?}: {counts:?}");
    }
}

#[tokio::test]
async fn consistent_hashing_sends_a_key_to_the_same_instance() {
    let (a, b, c) = (instance("a").await, instance("b").await, instance("c").await);
    let registry = fixed(&[(&a, 100), (&b, 100), (&c, 100)]);
    let channel = Channel::balanced(registry, SERVICE)
        .policy(Policy::consistent_hash("x-user"))
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel);
    let mut owners = BTreeMap::new();
    for user in 0..60 {
        let key = format!("user-{user}");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let response =
                client.echo(Echo::default()).metadata("x-user", key.clone()).full().await.expect("call");
            seen.push(response.metadata().get_str("x-instance").expect("tag").to_owned());
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{key} moved: {seen:?}");
        *owners.entry(seen[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(owners.len(), 3, "60 keys should land on all three instances: {owners:?}");
}

/// Delays every call by a fixed time: a slow instance.
struct Delay(Duration);

impl ServerInterceptor for Delay {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        tokio::time::sleep(self.0).await;
        next.run(ctx).await
    }
}

/// Echo calls from `callers` concurrent callers, `calls` each: who served them.
async fn concurrent_tally(client: &TestClient, callers: usize, calls: usize) -> BTreeMap<String, usize> {
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { tally(&client, calls).await })
        })
        .collect();
    let mut total = BTreeMap::new();
    for task in tasks {
        for (name, n) in task.await.expect("caller") {
            *total.entry(name).or_insert(0) += n;
        }
    }
    total
}

#[tokio::test]
async fn two_choices_sends_fewer_calls_to_a_slow_instance_than_round_robin_does() {
    let slow = instance_on("slow", TcpListener::bind("127.0.0.1:0").await.expect("bind"), |b| {
        b.interceptor(Delay(Duration::from_millis(50)))
    })
    .await;
    let fast = instance("fast").await;
    let registry = fixed(&[(&slow, 100), (&fast, 100)]);
    let p2c = Channel::balanced(registry.clone(), SERVICE)
        .policy(Policy::PowerOfTwoChoices)
        .connect()
        .await
        .expect("connect");
    let counts = concurrent_tally(&TestClient::new(p2c), 8, 40).await;
    let (slow_n, fast_n) = (counts.get("slow").copied().unwrap_or(0), counts["fast"]);
    assert!(fast_n > 3 * slow_n, "two choices: {counts:?}");
    // Round-robin, blind to load, splits them evenly.
    let rr =
        Channel::balanced(registry, SERVICE).policy(Policy::RoundRobin).connect().await.expect("connect");
    let counts = concurrent_tally(&TestClient::new(rr), 4, 10).await;
    assert_eq!(counts["slow"], counts["fast"], "round-robin: {counts:?}");
}

/// A live instance and an address nobody listens on, behind a round-robin channel whose
/// ejections last long enough not to end during a test.
async fn live_and_dead() -> (Running, std::net::SocketAddr, Channel) {
    let live = instance("live").await;
    let dead = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let registry =
        StaticRegistry::new().with(SERVICE, live.addr.to_string()).with(SERVICE, dead_addr.to_string());
    let channel = Channel::balanced(registry, SERVICE)
        .policy(Policy::RoundRobin)
        .ejection(Duration::from_secs(30), Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    (live, dead_addr, channel)
}

#[tokio::test]
async fn an_unreachable_instance_is_skipped_and_ejected_without_failing_calls() {
    let (_live, dead_addr, channel) = live_and_dead().await;
    let client = TestClient::new(channel.clone());
    // Not idempotent: they are failed over only because they never reached the dead address.
    let counts = tally(&client, 20).await;
    assert_eq!(counts, BTreeMap::from([("live".into(), 20)]));
    let dead_state = channel.instances().into_iter().find(|i| i.instance.address() == dead_addr.to_string());
    assert!(dead_state.expect("listed").ejected, "the dead instance is ejected");
}

#[tokio::test]
async fn a_killed_instance_is_routed_around_and_used_again_after_it_comes_back() {
    let a = instance("a").await;
    let b = instance("b").await;
    let c_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let c_addr = c_listener.local_addr().expect("addr");
    let c = instance_on("c", c_listener, |b| b).await;
    let registry = StaticRegistry::new()
        .with(SERVICE, a.addr.to_string())
        .with(SERVICE, b.addr.to_string())
        .with(SERVICE, c_addr.to_string());
    let channel = Channel::balanced(registry, SERVICE)
        .policy(Policy::RoundRobin)
        .idempotent("/test.v1.Test/*")
        .ejection(Duration::from_millis(200), Duration::from_millis(400))
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel.clone());

    // Traffic from 8 callers throughout; every call must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop, failures, served) =
                (client.clone(), Arc::clone(&stop), Arc::clone(&failures), Arc::clone(&served));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match served_by(&client).await {
                        Ok(name) => served.lock().expect("lock").push(name),
                        Err(status) => {
                            eprintln!("call failed: {status}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let count_of = |name: &str| served.lock().expect("lock").iter().filter(|n| *n == name).count();

    common::eventually("c serves calls", || count_of("c") > 20).await;
    c.kill().await;
    let killed_at = served.lock().expect("lock").len();
    common::eventually("500 calls after the kill", || served.lock().expect("lock").len() > killed_at + 500)
        .await;
    let c_before_restart = count_of("c");

    // c comes back on the same address: after its ejection, a probe finds it and it serves again.
    let listener = TcpListener::bind(c_addr).await.expect("rebind c's port");
    let _c = instance_on("c", listener, |b| b).await;
    common::eventually("the restarted c serves calls", || count_of("c") > c_before_restart + 20).await;

    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.expect("caller");
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "calls failed while an instance died");
    assert!(count_of("a") > 100 && count_of("b") > 100);
    drop((a, b));
}

#[tokio::test]
async fn a_call_in_flight_on_a_killed_instance_is_not_retried_unless_idempotent() {
    let a = instance("a").await;
    let b = instance("b").await;
    let registry = fixed(&[(&a, 100), (&b, 100)]);
    let channel =
        Channel::balanced(registry, SERVICE).policy(Policy::RoundRobin).connect().await.expect("connect");
    let client = TestClient::new(channel);
    // The first call goes to a (round-robin from the start of the list, sorted by address).
    let first_addr = std::cmp::min(a.addr.to_string(), b.addr.to_string());
    let (victim, survivor) = if a.addr.to_string() == first_addr { (a, b) } else { (b, a) };
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.sleep(Sleep { id: 1, millis: 5_000 }).await })
    };
    common::eventually("the call runs on the first instance", || {
        victim.probe.started.load(Ordering::SeqCst) == 1
    })
    .await;
    victim.kill().await;
    let status = call.await.expect("task").expect_err("the call was cut off");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(!status.is_refused(), "the call may have run: it must not be resent");
    assert_eq!(survivor.probe.started.load(Ordering::SeqCst), 0, "not retried elsewhere");
}

#[tokio::test]
async fn the_channel_follows_the_registry_without_failing_calls_in_flight() {
    let registry = MemoryRegistry::new();
    let a = instance_on("a", TcpListener::bind("127.0.0.1:0").await.expect("bind"), |b| {
        b.register(registry.clone(), Registration::new())
    })
    .await;
    let channel = Channel::balanced(registry.clone(), SERVICE).connect().await.expect("connect");
    let client = TestClient::new(channel.clone());
    assert_eq!(tally(&client, 10).await, BTreeMap::from([("a".into(), 10)]));

    // A second instance registers: calls start going to it.
    let b = instance_on("b", TcpListener::bind("127.0.0.1:0").await.expect("bind"), |b| {
        b.register(registry.clone(), Registration::new())
    })
    .await;
    common::eventually("b is listed", || channel.instances().len() == 2).await;
    let counts = tally(&client, 20).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");

    // a leaves (a graceful shutdown deregisters it first) while a call runs on it: the call
    // finishes, and later calls all go to b.
    let running = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut calls = Vec::new();
            for id in 0..2 {
                calls.push(client.sleep(Sleep { id, millis: 300 }).await);
            }
            calls
        })
    };
    common::eventually("a sleep call runs on a", || a.probe.started.load(Ordering::SeqCst) == 1).await;
    a.shutdown().await;
    assert!(running.await.expect("task").iter().all(Result::is_ok), "the calls in flight completed");
    common::eventually("a is no longer listed", || channel.instances().len() == 1).await;
    assert_eq!(tally(&client, 10).await, BTreeMap::from([("b".into(), 10)]));
    drop(b);
}

#[tokio::test]
async fn the_connection_to_an_instance_that_leaves_is_closed() {
    use tokio::io::AsyncReadExt;
    let registry = MemoryRegistry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let lease = rpc_core::discovery::Registry::register(&registry, Instance::new(SERVICE, addr.to_string()))
        .await
        .expect("register");
    let channel = Channel::balanced(registry, SERVICE).connect().await.expect("connect");
    let client = TestClient::new(channel.clone());
    // The "instance" is a bare socket: the channel connects (the call itself cannot succeed).
    let call =
        tokio::spawn(async move { client.echo(Echo::default()).timeout(Duration::from_millis(200)).await });
    let (mut socket, _) = listener.accept().await.expect("the channel connects");
    assert!(call.await.expect("task").is_err());
    drop(lease);
    common::eventually("the instance is gone", || channel.instances().is_empty()).await;
    let mut buf = vec![0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection to the departed instance stayed open");
}

#[tokio::test]
async fn connect_fails_when_no_instance_is_registered_in_time() {
    let err = Channel::balanced(MemoryRegistry::new(), SERVICE)
        .connect_timeout(Duration::from_millis(100))
        .connect()
        .await
        .expect_err("nothing to connect to");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no instances of test.v1.Test"), "{err}");
}

#[tokio::test]
async fn connect_waits_for_the_first_instance_to_register() {
    let registry = MemoryRegistry::new();
    let connecting = tokio::spawn(Channel::balanced(registry.clone(), SERVICE).connect());
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = instance_on("a", TcpListener::bind("127.0.0.1:0").await.expect("bind"), |b| {
        b.register(registry.clone(), Registration::new())
    })
    .await;
    let channel = connecting.await.expect("task").expect("connect once a registered");
    assert_eq!(tally(&TestClient::new(channel), 3).await, BTreeMap::from([("a".into(), 3)]));
    drop(a);
}

#[tokio::test]
async fn health_checks_leave_out_an_instance_that_is_not_serving() {
    let a_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let b_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a_builder = rpc_core::Server::builder().interceptor(Tag("a"));
    let a_health = a_builder.health_reporter();
    let a_addr = a_listener.local_addr().expect("addr");
    let b_addr = b_listener.local_addr().expect("addr");
    let _a = common::serve_from(a_builder, a_listener).await;
    let _b = instance_on("b", b_listener, |b| b).await;
    let registry = StaticRegistry::new().with(SERVICE, a_addr.to_string()).with(SERVICE, b_addr.to_string());
    let channel = Channel::balanced(registry, SERVICE)
        .policy(Policy::RoundRobin)
        .health_check(Duration::from_millis(50))
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel.clone());
    assert_eq!(tally(&client, 10).await.len(), 2);

    a_health.set_not_serving(SERVICE);
    common::eventually("a is seen not serving", || channel.instances().iter().any(|i| !i.serving)).await;
    assert_eq!(tally(&client, 10).await, BTreeMap::from([("b".into(), 10)]));

    a_health.set_serving(SERVICE);
    common::eventually("a is seen serving again", || channel.instances().iter().all(|i| i.serving)).await;
    assert_eq!(tally(&client, 10).await.len(), 2);
}

#[tokio::test]
async fn an_instance_that_accepts_but_never_answers_is_ejected() {
    let live = instance("live").await;
    // A socket that accepts connections and never speaks: a hung process.
    let hung = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let hung_addr = hung.local_addr().expect("addr");
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let registry =
        StaticRegistry::new().with(SERVICE, live.addr.to_string()).with(SERVICE, hung_addr.to_string());
    let channel = Channel::balanced(registry, SERVICE)
        .policy(Policy::RoundRobin)
        .timeout(Duration::from_millis(200))
        .ejection(Duration::from_secs(30), Duration::from_secs(30))
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel.clone());
    let mut failed = 0;
    for _ in 0..20 {
        if let Err(status) = served_by(&client).await {
            assert_eq!(status.code(), Code::DeadlineExceeded, "{status}");
            failed += 1;
        }
    }
    assert!(failed <= 1, "{failed} calls went to the hung instance");
    let hung_state = channel.instances().into_iter().find(|i| i.instance.address() == hung_addr.to_string());
    assert!(hung_state.expect("listed").ejected);
}

#[tokio::test]
async fn an_idempotent_call_cut_off_by_a_killed_instance_is_sent_to_another() {
    let a = instance("a").await;
    let b = instance("b").await;
    let registry = fixed(&[(&a, 100), (&b, 100)]);
    let channel = Channel::balanced(registry, SERVICE)
        .policy(Policy::RoundRobin)
        .idempotent("/test.v1.Test/Sleep")
        .connect()
        .await
        .expect("connect");
    let client = TestClient::new(channel);
    let first_addr = std::cmp::min(a.addr.to_string(), b.addr.to_string());
    let (victim, survivor) = if a.addr.to_string() == first_addr { (a, b) } else { (b, a) };
    let call = {
        let client = client.clone();
        tokio::spawn(async move { client.sleep(Sleep { id: 1, millis: 300 }).await })
    };
    common::eventually("the call runs on the first instance", || {
        victim.probe.started.load(Ordering::SeqCst) == 1
    })
    .await;
    victim.kill().await;
    let reply = call.await.expect("task").expect("the call succeeded on the other instance");
    assert_eq!(reply.id, 1);
    assert_eq!(survivor.probe.started.load(Ordering::SeqCst), 1);
}

/// A service whose handler returns the refusal it got from a call of its own.
#[rpc_core::service(package = "relay.v1")]
pub trait Relay {
    async fn forward(&self, ctx: &mut ServerContext, request: Echo) -> Result<Echo, Status>;
}

struct Relaying(Arc<AtomicUsize>);

impl Relay for Relaying {
    async fn forward(&self, _ctx: &mut ServerContext, _request: Echo) -> Result<Echo, Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        // The handler did its work, then a downstream call was refused: it passes that on.
        Err(Status::unavailable("the downstream service refused the call").refused())
    }
}

#[tokio::test]
async fn a_refusal_a_handler_passes_on_is_not_a_refusal_of_its_own_call() {
    let runs = Arc::new(AtomicUsize::new(0));
    let mut servers = Vec::new();
    let registry = MemoryRegistry::new();
    for _ in 0..2 {
        let builder = rpc_core::Server::builder()
            .add_service(RelayServer::new(Relaying(Arc::clone(&runs))))
            .register(registry.clone(), Registration::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        servers.push(tokio::spawn(builder.serve_with_listener(listener, std::future::pending())));
    }
    let channel = Channel::balanced(registry, RelayClient::SERVICE_NAME).connect().await.expect("connect");
    common::eventually("both instances are listed", || channel.instances().len() == 2).await;
    let status = RelayClient::new(channel).forward(Echo::default()).await.expect_err("relayed failure");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(!status.is_refused(), "the handler ran: its call was processed");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the call was not sent to the other instance");
    servers.iter().for_each(|s| s.abort());
}

/// Counts the calls that reach it, and refuses them all unprocessed: load shedding.
struct Shed(Arc<AtomicUsize>);

impl ServerInterceptor for Shed {
    async fn intercept(&self, _ctx: &mut ServerContext, _next: ServerNext<'_>) -> Result<(), Status> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(Status::resource_exhausted("shedding load").refused())
    }
}

#[tokio::test]
async fn a_refused_call_is_sent_to_at_most_failover_attempts_instances() {
    let reached = Arc::new(AtomicUsize::new(0));
    let mut shedding = Vec::new();
    for _ in 0..4 {
        let reached = Arc::clone(&reached);
        shedding.push(
            instance_on("shed", TcpListener::bind("127.0.0.1:0").await.expect("bind"), move |b| {
                b.interceptor(Shed(reached))
            })
            .await,
        );
    }
    let registry = shedding.iter().fold(StaticRegistry::new(), |r, s| r.with(SERVICE, s.addr.to_string()));
    for (attempts, expected) in [(1, 1), (3, 3), (10, 4)] {
        let channel = Channel::balanced(registry.clone(), SERVICE)
            .failover_attempts(attempts)
            .connect()
            .await
            .expect("connect");
        reached.store(0, Ordering::SeqCst);
        let status =
            TestClient::new(channel).echo(Echo::default()).await.expect_err("every instance refuses");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
        assert!(status.is_refused());
        assert_eq!(reached.load(Ordering::SeqCst), expected, "failover_attempts({attempts})");
    }
}

#[tokio::test]
async fn streams_on_a_balanced_channel_are_counted_in_flight_and_their_failures_eject() {
    use rpc_core::health::{HealthCheckRequest, HealthClient};
    let (live, dead_addr, channel) = live_and_dead().await;
    let health = HealthClient::new(channel.clone());
    let watch = || health.watch(HealthCheckRequest { service: SERVICE.into() });
    let mut opened = Vec::new();
    let mut failed = 0;
    for _ in 0..6 {
        // A stream to the dead instance fails as it opens.
        let mut stream = match watch().await {
            Ok(stream) => stream,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status}");
                failed += 1;
                continue;
            }
        };
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("an answer") {
            Ok(Some(_)) => opened.push(stream),
            Ok(None) => panic!("the watch ended at once"),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 1, "only the first stream went to the dead instance");
    let in_flight: BTreeMap<String, (usize, bool)> = channel
        .instances()
        .into_iter()
        .map(|i| (i.instance.address().to_owned(), (i.in_flight, i.ejected)))
        .collect();
    assert_eq!(in_flight[&live.addr.to_string()], (5, false));
    assert_eq!(in_flight[&dead_addr.to_string()], (0, true));
    drop(opened);
    common::eventually("the streams are no longer in flight", || {
        channel.instances().iter().all(|i| i.in_flight == 0)
    })
    .await;
}

#[tokio::test]
async fn health_checks_ask_for_the_name_the_server_registered_under() {
    let registry = MemoryRegistry::new();
    let _a = instance_on("a", TcpListener::bind("127.0.0.1:0").await.expect("bind"), |b| {
        b.register(registry.clone(), Registration::new().services(["alias.v1.Name"]))
    })
    .await;
    let channel = Channel::balanced(registry, "alias.v1.Name")
        .health_check(Duration::from_millis(20))
        .connect()
        .await
        .expect("connect");
    // Two rounds of checks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(channel.instances().iter().all(|i| i.serving), "{:?}", channel.instances());
    assert_eq!(tally(&TestClient::new(channel), 3).await, BTreeMap::from([("a".into(), 3)]));
}
