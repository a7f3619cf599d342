//! The interceptor mechanism over real sockets: order, rejection, metadata, extensions,
//! outcomes, streams, and a client interceptor that sends a call twice.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rpc_core::interceptor::{
    ClientContext, ClientInterceptor, ClientNext, ServerChain, ServerInterceptor, ServerNext,
};
use rpc_core::server::ServerBuilder;
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// A value an interceptor hands to the handler through the extensions.
#[derive(Debug, Clone)]
struct Caller(String);

type Log = Arc<Mutex<Vec<String>>>;

fn entries(log: &Log) -> Vec<String> {
    log.lock().expect("log").clone()
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
}

#[derive(Clone)]
struct ProbeService {
    log: Log,
}

impl Probe for ProbeService {
    async fn hello(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status> {
        self.log.lock().expect("log").push("handler".into());
        let caller = ctx.extensions().get::<Caller>().map(|c| c.0.clone()).unwrap_or_default();
        let tag = ctx.metadata().get_str("x-tag").unwrap_or_default().to_owned();
        ctx.response_metadata_mut().insert("x-seen-tag", tag);
        Ok(Msg { text: format!("{} from {caller}", request.text) })
    }

    async fn fail(&self, _ctx: &mut ServerContext, _request: Msg) -> Result<Msg, Status> {
        self.log.lock().expect("log").push("handler".into());
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
        self.log.lock().expect("log").push("handler done".into());
        match request.text.as_str() {
            "fail" => Err(Status::data_loss("after three")),
            _ => Ok(()),
        }
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
        Recorder { name, log: Arc::clone(log), reject: false }
    }

    fn push(&self, event: String) {
        self.log.lock().expect("log").push(event);
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
    let service = ProbeServer::new(ProbeService { log: Arc::clone(&log) });
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
    let service = ProbeServer::new(ProbeService { log: Arc::clone(&log) });
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

#[tokio::test]
async fn a_server_interceptor_sees_a_handler_error_and_the_end_of_a_stream() {
    let log = Log::default();
    let service = ProbeServer::new(ProbeService { log: Arc::clone(&log) });
    let addr = serve(|b| b.interceptor(Recorder::new("r", &log)).add_service(service)).await;
    let client = ProbeClient::new(Channel::connect(addr).await.expect("connect"));

    assert_eq!(client.fail(msg("x")).await.expect_err("fails").code(), Code::NotFound);
    assert_eq!(entries(&log), ["r in", "handler", "r out NOT_FOUND"]);

    log.lock().expect("log").clear();
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
    let addr =
        serve(|b| b.add_service(ProbeServer::new(ProbeService { log: Arc::clone(&server_log) }))).await;
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

    log.lock().expect("log").clear();
    assert_eq!(client.fail(msg("x")).await.expect_err("fails").code(), Code::NotFound);
    assert_eq!(entries(&log), ["a in", "b in", "b out NOT_FOUND", "a out NOT_FOUND"]);
}

#[tokio::test]
async fn a_client_interceptor_can_refuse_to_send_a_call_or_a_stream() {
    let server_log = Log::default();
    let addr =
        serve(|b| b.add_service(ProbeServer::new(ProbeService { log: Arc::clone(&server_log) }))).await;
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
    let addr =
        serve(|b| b.add_service(ProbeServer::new(ProbeService { log: Arc::clone(&server_log) }))).await;
    let log = Log::default();
    let client = ProbeClient::new(
        Channel::builder(addr).interceptor(Recorder::new("c", &log)).connect().await.expect("connect"),
    );
    let mut stream = client.count(msg("fail")).await.expect("open");
    assert_eq!(entries(&log), ["c in"], "open: the call is under way");
    while let Ok(Some(_)) = stream.message().await {}
    let out = async {
        loop {
            if entries(&log).len() == 2 {
                return entries(&log);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    };
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), out).await.expect("the end is seen");
    assert_eq!(seen, ["c in", "c out DATA_LOSS"]);
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
    let addr =
        serve(|b| b.add_service(ProbeServer::new(ProbeService { log: Arc::clone(&server_log) }))).await;
    let client =
        ProbeClient::new(Channel::builder(addr).interceptor(Twice).connect().await.expect("connect"));
    assert_eq!(client.hello(msg("hi")).await.expect("call").text, "hi from ");
    assert_eq!(entries(&server_log), ["handler", "handler"], "the server got the call twice");
}
