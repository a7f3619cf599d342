//! The interceptor mechanism over real sockets: order, rejection, metadata, extensions,
//! outcomes (deadlines, panics and cancels included), the messages, streams, interceptors
//! per channel, per client and per call, and a client interceptor that sends a call twice.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rpc_core::interceptor::{
    ClientChain, ClientContext, ClientInterceptor, ClientNext, ServerChain, ServerInterceptor, ServerNext,
};
use rpc_core::middleware::Deadlines;
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender};
use tokio::sync::Notify;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// A value an interceptor hands to the handler through the extensions.
#[derive(Debug, Clone)]
struct Caller(String);

/// What happened, in order, shared by handlers, interceptors and the test.
#[derive(Clone, Default)]
struct Log {
    entries: Arc<Mutex<Vec<String>>>,
    changed: Arc<Notify>,
}

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.entries.lock().expect("log").push(entry.into());
        self.changed.notify_waiters();
    }

    fn clear(&self) {
        self.entries.lock().expect("log").clear();
    }

    /// Waits until `entry` has been logged (failing the test if it never is).
    async fn wait_for(&self, entry: &str) {
        let logged = async {
            loop {
                let changed = self.changed.notified();
                let mut changed = std::pin::pin!(changed);
                changed.as_mut().enable();
                if entries(self).iter().any(|e| e == entry) {
                    return;
                }
                changed.await;
            }
        };
        let waited = tokio::time::timeout(Duration::from_secs(10), logged).await;
        assert!(waited.is_ok(), "`{entry}` was never logged; the log: {:?}", entries(self));
    }
}

fn entries(log: &Log) -> Vec<String> {
    log.entries.lock().expect("log").clone()
}

#[rpc_core::service(package = "test.v1")]
pub trait Probe {
    async fn hello(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    async fn fail(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    async fn count(
        &self,
        ctx: &mut ServerContext,
        request: Msg,
        out: StreamSender<Msg>,
    ) -> Result<(), Status>;
    /// Logs "hang", then never answers; logs "hang dropped" when it is dropped.
    async fn hang(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    /// Panics.
    async fn boom(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
}

/// Logs its name when dropped.
struct OnDrop(Log, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.push(self.1);
    }
}

#[derive(Clone)]
struct ProbeService {
    log: Log,
}

impl Probe for ProbeService {
    async fn hello(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status> {
        self.log.push("handler");
        let caller = ctx.extensions().get::<Caller>().map(|c| c.0.clone()).unwrap_or_default();
        let tag = ctx.metadata().get_str("x-tag").unwrap_or_default().to_owned();
        ctx.response_metadata_mut().insert("x-seen-tag", tag);
        Ok(Msg { text: format!("{} from {caller}", request.text) })
    }

    async fn fail(&self, _ctx: &mut ServerContext, _request: Msg) -> Result<Msg, Status> {
        self.log.push("handler");
        Err(Status::not_found("nothing here"))
    }

    async fn count(
        &self,
        _ctx: &mut ServerContext,
        request: Msg,
        mut out: StreamSender<Msg>,
    ) -> Result<(), Status> {
        for n in 0..3 {
            out.send(Msg { text: n.to_string() }).await?;
        }
        self.log.push("handler done");
        match request.text.as_str() {
            "fail" => Err(Status::data_loss("after three")),
            _ => Ok(()),
        }
    }

    async fn hang(&self, _ctx: &mut ServerContext, _request: Msg) -> Result<Msg, Status> {
        let _dropped = OnDrop(self.log.clone(), "hang dropped");
        self.log.push("hang");
        std::future::pending().await
    }

    async fn boom(&self, _ctx: &mut ServerContext, _request: Msg) -> Result<Msg, Status> {
        panic!("boom on purpose");
    }
}

/// Records entering and leaving, with the outcome; may reject or add a tag.
struct Recorder {
    name: &'static str,
    log: Log,
    reject: bool,
}

impl Recorder {
    fn new(name: &'static str, log: &Log) -> Recorder {
        Recorder { name, log: log.clone(), reject: false }
    }

    fn push(&self, event: String) {
        self.log.push(event);
    }

    fn outcome(result: &Result<(), Status>) -> String {
        match result {
            Ok(()) => "OK".into(),
            Err(status) => status.code().to_string(),
        }
    }
}

impl ServerInterceptor for Recorder {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        self.push(format!("{} in", self.name));
        if self.reject {
            return Err(Status::permission_denied(format!("{} says no", self.name)));
        }
        ctx.metadata_mut().insert("x-tag", self.name);
        ctx.extensions_mut().insert(Caller(self.name.to_owned()));
        let result = next.run(ctx).await;
        self.push(format!("{} out {}", self.name, Recorder::outcome(&result)));
        result
    }
}

impl ClientInterceptor for Recorder {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        self.push(format!("{} in", self.name));
        if self.reject {
            return Err(Status::permission_denied(format!("{} says no", self.name)));
        }
        ctx.metadata_mut().insert("x-tag", self.name);
        let result = next.run(ctx).await;
        self.push(format!("{} out {}", self.name, Recorder::outcome(&result)));
        result
    }
}

async fn serve(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(configure(Server::builder()).serve_with_listener(listener, std::future::pending()));
    addr
}

fn msg(text: &str) -> Msg {
    Msg { text: text.into() }
}

#[tokio::test]
async fn server_interceptors_run_server_wide_then_per_service_in_registration_order() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    let addr = serve(|b| {
        b.interceptor(Recorder::new("a", &log))
            .interceptor(Recorder::new("b", &log))
            .add_service_with(service, ServerChain::new().with(Recorder::new("s", &log)))
    })
    .await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));
    let reply = client.hello(msg("hi")).full().await.expect("call");
    assert_eq!(
        entries(&log),
        ["a in", "b in", "s in", "handler", "s out OK", "b out OK", "a out OK"],
        "the first registered runs outermost"
    );
    // The innermost interceptor's metadata and extension reached the handler.
    assert_eq!(reply.get_ref().text, "hi from s");
    assert_eq!(reply.metadata().get_str("x-seen-tag"), Some("s"));
}

#[tokio::test]
async fn a_server_interceptor_can_reject_before_the_handler_and_sees_outcomes() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    let mut gate = Recorder::new("gate", &log);
    gate.reject = true;
    let addr = serve(|b| {
        b.interceptor(Recorder::new("outer", &log)).add_service_with(service, ServerChain::new().with(gate))
    })
    .await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));
    let status = client.hello(msg("hi")).await.expect_err("rejected");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "gate says no");
    assert_eq!(entries(&log), ["outer in", "gate in", "outer out PERMISSION_DENIED"], "no handler ran");
}

/// A stream an interceptor turns away fails as the caller opens it, with the interceptor's
/// status: the server says whether a stream's handler started (`STREAM_ACCEPT`).
#[tokio::test]
async fn a_stream_a_server_interceptor_rejects_fails_as_it_opens() {
    let log = Log::default();
    let mut gate = Recorder::new("gate", &log);
    gate.reject = true;
    let addr =
        serve(|b| b.add_service(ProbeServer::new(ProbeService { log: log.clone() })).interceptor(gate)).await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));
    let status = client.count(msg("x")).await.expect_err("rejected at the open");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "gate says no");
    assert_eq!(entries(&log), ["gate in"], "no handler ran");
}

#[tokio::test]
async fn a_server_interceptor_sees_a_handler_error_and_the_end_of_a_stream() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    let addr = serve(|b| b.interceptor(Recorder::new("r", &log)).add_service(service)).await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));

    assert_eq!(client.fail(msg("x")).await.expect_err("fails").code(), Code::NotFound);
    assert_eq!(entries(&log), ["r in", "handler", "r out NOT_FOUND"]);

    log.clear();
    let mut stream = client.count(msg("fail")).await.expect("open");
    let mut got = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => got += 1,
            Ok(None) => panic!("expected the error"),
            Err(status) => break status,
        }
    };
    assert_eq!((got, status.code()), (3, Code::DataLoss));
    // The interceptor saw the stream from its start to its end.
    assert_eq!(entries(&log), ["r in", "handler done", "r out DATA_LOSS"]);
}

#[tokio::test]
async fn client_interceptors_run_in_order_change_metadata_and_see_outcomes() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let log = Log::default();
    let channel = Channel::builder(addr)
        .interceptor(Recorder::new("a", &log))
        .interceptor(Recorder::new("b", &log))
        .connect()
        .await
        .expect("connect");
    let client = ProbeClient::new(channel);
    let reply = client.hello(msg("hi")).full().await.expect("call");
    assert_eq!(reply.metadata().get_str("x-seen-tag"), Some("b"), "the inner interceptor's tag was sent");
    assert_eq!(entries(&log), ["a in", "b in", "b out OK", "a out OK"]);

    log.clear();
    assert_eq!(client.fail(msg("x")).await.expect_err("fails").code(), Code::NotFound);
    assert_eq!(entries(&log), ["a in", "b in", "b out NOT_FOUND", "a out NOT_FOUND"]);
}

#[tokio::test]
async fn a_client_interceptor_can_refuse_to_send_a_call_or_a_stream() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let log = Log::default();
    let mut gate = Recorder::new("gate", &log);
    gate.reject = true;
    let client = ProbeClient::new(Channel::builder(addr).interceptor(gate).connect().await.expect("connect"));
    assert_eq!(client.hello(msg("hi")).await.expect_err("refused").code(), Code::PermissionDenied);
    assert_eq!(client.count(msg("x")).await.expect_err("refused").code(), Code::PermissionDenied);
    assert!(entries(&server_log).is_empty(), "nothing reached the server");
}

#[tokio::test]
async fn a_client_interceptor_sees_a_stream_end_after_the_caller_read_it() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let log = Log::default();
    let client = ProbeClient::new(
        Channel::builder(addr).interceptor(Recorder::new("c", &log)).connect().await.expect("connect"),
    );
    let mut stream = client.count(msg("fail")).await.expect("open");
    assert_eq!(entries(&log).first().map(String::as_str), Some("c in"), "open: the call went through");
    while let Ok(Some(_)) = stream.message().await {}
    log.wait_for("c out DATA_LOSS").await;
    assert_eq!(entries(&log), ["c in", "c out DATA_LOSS"]);
}

/// Sends every call twice: the shape of a retry.
struct Twice;

impl ClientInterceptor for Twice {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let first = next.run(ctx).await;
        assert!(first.is_ok() || ctx.attempts() == 1);
        let second = next.run(ctx).await;
        assert_eq!(ctx.attempts(), 2);
        second
    }
}

#[tokio::test]
async fn a_client_interceptor_may_send_a_call_again() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let client =
        ProbeClient::new(Channel::builder(addr).interceptor(Twice).connect().await.expect("connect"));
    assert_eq!(client.hello(msg("hi")).await.expect("call").text, "hi from ");
    assert_eq!(entries(&server_log), ["handler", "handler"], "the server got the call twice");
}

/// A server on a loopback port with `interceptor` in front of the probe service; the log is
/// the service's and the interceptor's.
async fn serve_behind(interceptor: impl ServerInterceptor, log: &Log) -> ProbeClient {
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    let addr = serve(|b| b.interceptor(interceptor).add_service(service)).await;
    ProbeClient::new(Channel::connect(addr).await.expect("connect"))
}

#[tokio::test]
async fn a_server_interceptor_sees_a_deadline_that_passed_in_the_handler() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    // The server's deadline, not the client's: the client sends no cancel.
    let deadlines = Deadlines::new().default_timeout(Duration::from_millis(50));
    let addr =
        serve(|b| b.interceptor(deadlines).interceptor(Recorder::new("r", &log)).add_service(service)).await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));
    let status = client.hang(msg("x")).await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(
        entries(&log),
        ["r in", "hang", "hang dropped", "r out DEADLINE_EXCEEDED"],
        "the handler was stopped"
    );
}

#[tokio::test]
async fn a_server_interceptor_sees_a_handler_panic_as_internal() {
    let log = Log::default();
    let client = serve_behind(Recorder::new("r", &log), &log).await;
    let status = client.boom(msg("x")).await.expect_err("panics");
    assert_eq!(status.code(), Code::Internal);
    assert_eq!(entries(&log), ["r in", "r out INTERNAL"], "the interceptor saw it before the answer went");
}

#[tokio::test]
async fn a_server_interceptor_sees_the_client_cancel_and_no_answer_is_sent() {
    let log = Log::default();
    let client = serve_behind(Recorder::new("r", &log), &log).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.hang(msg("x")).await }
    });
    log.wait_for("hang").await;
    // Dropping the call's future cancels it.
    call.abort();
    log.wait_for("r out CANCELLED").await;
    assert_eq!(entries(&log), ["r in", "hang", "hang dropped", "r out CANCELLED"]);
    // The connection goes on serving.
    assert_eq!(client.hello(msg("again")).await.expect("call").text, "again from r");
}

/// Reports each call's end through `Run::on_end`, the way the built-ins do.
struct Ends(Log);

impl ServerInterceptor for Ends {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        let log = self.0.clone();
        next.run(ctx).on_end(move |outcome| log.push(format!("end {}", Recorder::outcome(outcome)))).await
    }
}

impl ClientInterceptor for Ends {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let log = self.0.clone();
        next.run(ctx).on_end(move |outcome| log.push(format!("end {}", Recorder::outcome(outcome)))).await
    }
}

#[tokio::test]
async fn on_end_reports_a_call_dropped_with_its_connection() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .interceptor(Ends(log.clone()))
        .interceptor(Recorder::new("r", &log))
        .add_service(service)
        .shutdown_grace(Duration::ZERO)
        .serve_with_listener(listener, async {
            let _ = stopped.await;
        });
    let server = tokio::spawn(server);
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));
    let call = tokio::spawn(async move { client.hang(msg("x")).await });
    log.wait_for("hang").await;
    // No grace: the server closes the connection with the call still running, and drops it.
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    log.wait_for("end CANCELLED").await;
    log.wait_for("hang dropped").await;
    let mut seen = entries(&log);
    seen.sort();
    assert_eq!(seen, ["end CANCELLED", "hang", "hang dropped", "r in"], "only on_end sees a dropped call");
    assert_eq!(call.await.expect("call task").expect_err("no answer").code(), Code::Unavailable);
}

#[tokio::test]
async fn a_client_interceptor_sees_the_deadline_and_on_end_sees_a_call_the_caller_dropped() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let log = Log::default();
    let channel = Channel::builder(addr)
        .interceptor(Ends(log.clone()))
        .interceptor(Recorder::new("r", &log))
        .connect()
        .await
        .expect("connect");
    let client = ProbeClient::new(channel);

    let status = client.hang(msg("x")).timeout(Duration::from_millis(100)).await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(entries(&log), ["r in", "r out DEADLINE_EXCEEDED", "end DEADLINE_EXCEEDED"]);

    log.clear();
    server_log.wait_for("hang dropped").await;
    server_log.clear();
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.hang(msg("y")).await }
    });
    server_log.wait_for("hang").await;
    call.abort();
    log.wait_for("end CANCELLED").await;
    assert_eq!(entries(&log), ["r in", "end CANCELLED"], "only on_end sees a call dropped by its caller");
}

/// Reads the request, makes it shout, and marks the response: what a validating or
/// redacting interceptor does.
struct Rewrite(Log);

impl ServerInterceptor for Rewrite {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        self.0.push(format!("request {:?}", next.request().and_then(|m| m.downcast_ref::<Msg>())));
        if let Some(request) = next.request_mut().and_then(|m| m.downcast_mut::<Msg>()) {
            request.text = request.text.to_uppercase();
        }
        let outcome = next.run(ctx).await;
        assert!(next.request().is_none(), "the handler took the request");
        if let Some(response) = next.response_mut().and_then(|m| m.downcast_mut::<Msg>()) {
            response.text.push_str(" (checked)");
        }
        self.0.push(format!("response {:?}", next.response().map(|m| format!("{m:?}"))));
        outcome
    }
}

#[tokio::test]
async fn a_server_interceptor_reads_and_replaces_the_request_and_the_response() {
    let log = Log::default();
    let client = serve_behind(Rewrite(log.clone()), &log).await;
    assert_eq!(client.hello(msg("hi")).await.expect("call").text, "HI from  (checked)");
    assert_eq!(entries(&log)[0], r#"request Some(Msg { text: "hi" })"#);
    assert_eq!(entries(&log)[2], r#"response Some("Msg { text: \"HI from  (checked)\" }")"#);

    // A stream's messages go by the interceptor: it sees neither.
    log.clear();
    let mut stream = client.count(msg("ok")).await.expect("open");
    while stream.message().await.expect("message").is_some() {}
    log.wait_for("response None").await;
    assert_eq!(entries(&log), ["request None", "handler done", "response None"]);
}

/// Logs the request and the response a client sends and receives.
struct Peek(Log);

impl ClientInterceptor for Peek {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        self.0.push(format!("request {:?}", next.request().and_then(|m| m.downcast_ref::<Msg>())));
        let outcome = next.run(ctx).await;
        self.0.push(format!("response {:?}", next.response().and_then(|m| m.downcast_ref::<Msg>())));
        outcome
    }
}

#[tokio::test]
async fn a_client_interceptor_reads_the_request_and_the_response() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let log = Log::default();
    let client = ProbeClient::new(
        Channel::builder(addr).interceptor(Peek(log.clone())).connect().await.expect("connect"),
    );
    assert_eq!(client.hello(msg("hi")).await.expect("call").text, "hi from ");
    assert_eq!(
        entries(&log),
        [r#"request Some(Msg { text: "hi" })"#, r#"response Some(Msg { text: "hi from " })"#]
    );

    log.clear();
    assert_eq!(client.fail(msg("x")).await.expect_err("fails").code(), Code::NotFound);
    assert_eq!(entries(&log), [r#"request Some(Msg { text: "x" })"#, "response None"]);
}

#[tokio::test]
async fn interceptors_attach_to_one_client_and_to_one_call_inside_the_channels() {
    let server_log = Log::default();
    let addr = serve(|b| b.add_service(ProbeServer::new(ProbeService { log: server_log.clone() }))).await;
    let log = Log::default();
    let channel =
        Channel::builder(addr).interceptor(Recorder::new("channel", &log)).connect().await.expect("connect");
    let plain = ProbeClient::new(channel.clone());
    let special =
        ProbeClient::new(channel.with_interceptors(ClientChain::new().with(Recorder::new("client", &log))));

    plain.hello(msg("a")).await.expect("call");
    assert_eq!(entries(&log), ["channel in", "channel out OK"], "the other client's interceptor stays out");

    log.clear();
    special.hello(msg("b")).await.expect("call");
    assert_eq!(entries(&log), ["channel in", "client in", "client out OK", "channel out OK"]);

    log.clear();
    let reply = special.hello(msg("c")).interceptor(Recorder::new("call", &log)).full().await.expect("call");
    assert_eq!(
        entries(&log),
        ["channel in", "client in", "call in", "call out OK", "client out OK", "channel out OK"]
    );
    assert_eq!(reply.metadata().get_str("x-seen-tag"), Some("call"), "the innermost tag was sent");

    log.clear();
    let mut stream = plain.count(msg("ok")).interceptor(Recorder::new("call", &log)).await.expect("open");
    while stream.message().await.expect("message").is_some() {}
    log.wait_for("channel out OK").await;
    assert_eq!(entries(&log), ["channel in", "call in", "call out OK", "channel out OK"]);
}

/// Never ends once the call has: an interceptor stuck after its `next`.
struct Stuck(Log);

impl ServerInterceptor for Stuck {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        let outcome = next.run(ctx).await;
        self.0.push(format!("stuck after {}", Recorder::outcome(&outcome)));
        std::future::pending().await
    }
}

#[tokio::test]
async fn interceptors_that_do_not_end_are_dropped_a_grace_period_after_the_deadline() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: log.clone() });
    let deadlines = Deadlines::new().default_timeout(Duration::from_millis(50));
    let addr = serve(|b| {
        b.interceptor(Ends(log.clone()))
            .interceptor(deadlines)
            .interceptor(Stuck(log.clone()))
            .add_service(service)
    })
    .await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));
    let status = client.hang(msg("x")).await.expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert!(status.message().contains("had not ended"), "{status}");
    // The handler was stopped at the deadline, the interceptors a grace period later.
    assert_eq!(
        entries(&log),
        ["hang", "hang dropped", "stuck after DEADLINE_EXCEEDED", "end DEADLINE_EXCEEDED"]
    );
}
