//! The built-in `Metrics` interceptor over real sockets: counts and error codes per method on
//! both sides, the in-flight gauge, streams counted when they end, abandoned and panicking
//! calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use rpc_core::middleware::Metrics;
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender};
use tokio::sync::Semaphore;

use crate::common::eventually;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    /// For `fail`: the code to fail with.
    #[prost(uint32, tag = "1")]
    pub code: u32,
}

#[rpc_core::service(package = "metrics.v1")]
pub trait Meter {
    /// Answers at once.
    async fn ok(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    /// Fails with the code asked for.
    async fn fail(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    /// Answers once the test opens the gate.
    async fn wait(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    /// Sends a message, waits for the gate, then ends with the code asked for.
    async fn stream(
        &self,
        ctx: &mut ServerContext,
        request: Msg,
        out: StreamSender<Msg>,
    ) -> Result<(), Status>;
    /// Panics.
    async fn panic(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
}

#[derive(Clone)]
struct MeterService {
    gate: Arc<Semaphore>,
}

impl MeterService {
    async fn pass_gate(&self) -> Result<(), Status> {
        let permit = self.gate.acquire().await.map_err(|_| Status::internal("gate closed"))?;
        permit.forget();
        Ok(())
    }
}

fn outcome(code: u32) -> Result<(), Status> {
    match Code::from_u32(code) {
        Code::Ok => Ok(()),
        code => Err(Status::new(code, "asked to fail")),
    }
}

impl Meter for MeterService {
    async fn ok(&self, _ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status> {
        Ok(request)
    }

    async fn fail(&self, _ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status> {
        outcome(request.code).map(|()| request)
    }

    async fn wait(&self, _ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status> {
        self.pass_gate().await?;
        Ok(request)
    }

    async fn stream(
        &self,
        _ctx: &mut ServerContext,
        request: Msg,
        mut out: StreamSender<Msg>,
    ) -> Result<(), Status> {
        out.send(Msg { code: 0 }).await?;
        self.pass_gate().await?;
        outcome(request.code)
    }

    async fn panic(&self, _ctx: &mut ServerContext, _request: Msg) -> Result<Msg, Status> {
        panic!("the handler panicked on purpose");
    }
}

/// A server and a client, both with `metrics`, and the server's gate.
struct Setup {
    client: MeterClient,
    gate: Arc<Semaphore>,
    addr: SocketAddr,
}

async fn setup(metrics: &Metrics) -> Setup {
    let gate = Arc::new(Semaphore::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = MeterServer::new(MeterService { gate: Arc::clone(&gate) });
    let server = Server::builder().interceptor(metrics.clone()).add_service(service);
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    let channel = Channel::builder(addr).interceptor(metrics.clone()).connect().await.expect("connect");
    Setup { client: MeterClient::new(channel), gate, addr }
}

/// The value of one sample in `text`, e.g. `rpc_server_requests_total{method="/a.B/C"}`;
/// `None` if it is not there.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The value of `name` for `method` (and more labels, `extra`, e.g. `,code="NOT_FOUND"`).
fn value(metrics: &Metrics, name: &str, method: &str, extra: &str) -> Option<f64> {
    sample(&metrics.render(), &format!("{name}{{method=\"/metrics.v1.Meter/{method}\"{extra}}}"))
}

fn code(code: Code) -> Msg {
    Msg { code: code.as_u32() }
}

#[tokio::test]
async fn calls_and_errors_by_code_are_counted_per_method_on_both_sides() {
    let metrics = Metrics::new();
    let Setup { client, .. } = setup(&metrics).await;
    for _ in 0..3 {
        client.ok(Msg::default()).await.expect("ok");
    }
    for wanted in [Code::NotFound, Code::NotFound, Code::InvalidArgument] {
        assert_eq!(client.fail(code(wanted)).await.expect_err("fails").code(), wanted);
    }
    client.fail(code(Code::Ok)).await.expect("a fail that succeeds");

    for side in ["server", "client"] {
        let count = |name: &str, method, extra| value(&metrics, &format!("rpc_{side}_{name}"), method, extra);
        assert_eq!(count("requests_total", "Ok", ""), Some(3.0), "{side}");
        assert_eq!(count("requests_total", "Fail", ""), Some(4.0), "{side}");
        assert_eq!(count("errors_total", "Fail", ",code=\"NOT_FOUND\""), Some(2.0), "{side}");
        assert_eq!(count("errors_total", "Fail", ",code=\"INVALID_ARGUMENT\""), Some(1.0), "{side}");
        assert_eq!(count("errors_total", "Fail", ",code=\"OK\""), None, "{side}: OK is no error");
        assert_eq!(count("errors_total", "Ok", ",code=\"NOT_FOUND\""), None, "{side}");
        assert_eq!(count("request_duration_seconds_count", "Ok", ""), Some(3.0), "{side}");
        assert_eq!(count("request_duration_seconds_count", "Fail", ""), Some(4.0), "{side}");
        let last_bucket = format!(
            "rpc_{side}_request_duration_seconds_bucket{{le=\"+Inf\",method=\"/metrics.v1.Meter/Ok\"}}"
        );
        assert_eq!(sample(&metrics.render(), &last_bucket), Some(3.0), "{side}");
        assert_eq!(count("requests_in_flight", "Ok", ""), Some(0.0), "{side}");
    }
}

#[tokio::test]
async fn the_in_flight_gauge_shows_a_slow_call_while_it_runs_and_returns_to_zero() {
    let metrics = Metrics::new();
    let Setup { client, gate, .. } = setup(&metrics).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.wait(Msg::default()).await }
    });
    let in_flight = |side: &str| value(&metrics, &format!("rpc_{side}_requests_in_flight"), "Wait", "");
    let requests = |side: &str| value(&metrics, &format!("rpc_{side}_requests_total"), "Wait", "");
    eventually("the call is in flight on both sides", || {
        in_flight("server") == Some(1.0) && in_flight("client") == Some(1.0)
    })
    .await;
    assert_eq!((requests("server"), requests("client")), (None, None), "not counted before it ends");

    gate.add_permits(1);
    call.await.expect("task").expect("call");
    for side in ["server", "client"] {
        assert_eq!(in_flight(side), Some(0.0), "{side}");
        assert_eq!(requests(side), Some(1.0), "{side}");
    }
}

#[tokio::test]
async fn a_stream_is_in_flight_until_it_ends_and_counted_then() {
    let metrics = Metrics::new();
    let Setup { client, gate, .. } = setup(&metrics).await;
    let in_flight = |side: &str| value(&metrics, &format!("rpc_{side}_requests_in_flight"), "Stream", "");
    let requests = |side: &str| value(&metrics, &format!("rpc_{side}_requests_total"), "Stream", "");
    let errors =
        |side: &str| value(&metrics, &format!("rpc_{side}_errors_total"), "Stream", ",code=\"DATA_LOSS\"");

    let mut stream = client.stream(code(Code::DataLoss)).await.expect("open");
    assert!(stream.message().await.expect("first").is_some());
    for side in ["server", "client"] {
        assert_eq!(in_flight(side), Some(1.0), "{side}: open");
        assert_eq!(requests(side), None, "{side}: not counted while open");
    }

    gate.add_permits(1);
    assert_eq!(stream.message().await.expect_err("ends with an error").code(), Code::DataLoss);
    eventually("both sides counted the end", || {
        ["server", "client"].iter().all(|side| requests(side) == Some(1.0))
    })
    .await;
    for side in ["server", "client"] {
        assert_eq!(errors(side), Some(1.0), "{side}");
        assert_eq!(in_flight(side), Some(0.0), "{side}");
    }
}

#[tokio::test]
async fn a_call_abandoned_at_its_deadline_counts_as_deadline_exceeded_and_leaves_flight() {
    let metrics = Metrics::new();
    let Setup { client, .. } = setup(&metrics).await;
    // The gate stays shut: the server abandons the handler at the deadline.
    let status = client.wait(Msg::default()).timeout(Duration::from_millis(50)).await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let errors = |side: &str| {
        value(&metrics, &format!("rpc_{side}_errors_total"), "Wait", ",code=\"DEADLINE_EXCEEDED\"")
    };
    let in_flight = |side: &str| value(&metrics, &format!("rpc_{side}_requests_in_flight"), "Wait", "");
    eventually("the server abandoned the call", || errors("server") == Some(1.0)).await;
    for side in ["server", "client"] {
        assert_eq!(errors(side), Some(1.0), "{side}");
        assert_eq!(in_flight(side), Some(0.0), "{side}");
    }
}

#[tokio::test]
async fn a_panicking_handler_counts_as_internal() {
    let metrics = Metrics::new();
    let Setup { client, .. } = setup(&metrics).await;
    assert_eq!(client.panic(Msg::default()).await.expect_err("panics").code(), Code::Internal);
    let internal = ",code=\"INTERNAL\"";
    assert_eq!(value(&metrics, "rpc_server_errors_total", "Panic", internal), Some(1.0));
    assert_eq!(value(&metrics, "rpc_server_requests_in_flight", "Panic", ""), Some(0.0));
    assert_eq!(value(&metrics, "rpc_client_errors_total", "Panic", internal), Some(1.0));
}

#[tokio::test]
async fn the_series_are_named_documented_and_shown_in_another_registry_too() {
    let metrics = Metrics::new();
    let Setup { client, addr, .. } = setup(&metrics).await;
    client.ok(Msg::default()).await.expect("ok");
    // A family without samples is left out of the text: give the errors one.
    client.fail(code(Code::NotFound)).await.expect_err("fails");
    let text = metrics.render();
    for side in ["server", "client"] {
        for (name, kind) in [
            ("requests", "counter"),
            ("errors", "counter"),
            ("requests_in_flight", "gauge"),
            ("request_duration_seconds", "histogram"),
        ] {
            assert!(text.contains(&format!("# TYPE rpc_{side}_{name} {kind}\n")), "{name}: {text}");
            assert!(text.contains(&format!("# HELP rpc_{side}_{name} ")), "{name}: {text}");
        }
    }
    assert!(text.contains("# UNIT rpc_server_request_duration_seconds seconds\n"), "{text}");
    assert!(text.ends_with("# EOF\n"));

    let mut registry = Registry::with_prefix("app");
    metrics.register(&mut registry);
    let mut other = String::new();
    prometheus_client::encoding::text::encode(&mut other, &registry).expect("encode");
    let ok = "{method=\"/metrics.v1.Meter/Ok\"}";
    for side in ["server", "client"] {
        let series = format!("app_rpc_{side}_requests_total{ok}");
        assert_eq!(sample(&other, &series), Some(1.0), "{side}: {other}");
    }

    // Another `Metrics` counts apart.
    let apart = Metrics::new();
    let channel = Channel::builder(addr).interceptor(apart.clone()).connect().await.expect("connect");
    MeterClient::new(channel).ok(Msg::default()).await.expect("ok");
    assert_eq!(value(&apart, "rpc_client_requests_total", "Ok", ""), Some(1.0));
    assert_eq!(value(&metrics, "rpc_server_requests_total", "Ok", ""), Some(2.0));
    assert_eq!(value(&metrics, "rpc_client_requests_total", "Ok", ""), Some(1.0));
}
