//! The built-in `Tracing` interceptor over real sockets: one trace across servers, new traces
//! where none came in, invalid `traceparent` values ignored, and the spans it records.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rpc_core::interceptor::{ClientContext, ClientInterceptor, ClientNext};
use rpc_core::middleware::{SpanId, TraceContext, TraceId, Tracing};
use rpc_core::{Channel, Code, Server, ServerContext, Status, StreamSender};
use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::common::eventually;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// What a server's handler saw: the current trace context, the one in the call's extensions,
/// and the `tracestate` that came in.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    server: &'static str,
    current: Option<TraceContext>,
    in_extensions: Option<TraceContext>,
    tracestate: Option<String>,
}

/// What a channel sent: the outgoing call's context (from the extensions `Tracing` fills)
/// and its `traceparent`.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    context: Option<TraceContext>,
    traceparent: Option<String>,
}

type Log<T> = Arc<Mutex<Vec<T>>>;

fn entries<T: Clone>(log: &Log<T>) -> Vec<T> {
    log.lock().expect("log").clone()
}

/// A service whose handlers record what they see, then call the next server, if any.
#[rpc_core::service(package = "trace.v1")]
pub trait Hop {
    async fn hop(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
    async fn hops(&self, ctx: &mut ServerContext, request: Msg, out: StreamSender<Msg>)
    -> Result<(), Status>;
    async fn fail(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status>;
}

#[derive(Clone)]
struct HopService {
    name: &'static str,
    next: Option<HopClient>,
    seen: Log<Seen>,
}

impl HopService {
    fn record(&self, ctx: &ServerContext) {
        self.seen.lock().expect("log").push(Seen {
            server: self.name,
            current: TraceContext::current(),
            in_extensions: ctx.extensions().get::<TraceContext>().copied(),
            tracestate: ctx.metadata().get_str("tracestate").map(str::to_owned),
        });
    }
}

impl Hop for HopService {
    async fn hop(&self, ctx: &mut ServerContext, request: Msg) -> Result<Msg, Status> {
        self.record(ctx);
        match &self.next {
            Some(next) => next.hop(request).await,
            None => Ok(request),
        }
    }

    async fn hops(
        &self,
        ctx: &mut ServerContext,
        request: Msg,
        mut out: StreamSender<Msg>,
    ) -> Result<(), Status> {
        self.record(ctx);
        if let Some(next) = &self.next {
            let mut stream = next.hops(request.clone()).await?;
            while let Some(message) = stream.message().await? {
                out.send(message).await?;
            }
        }
        out.send(Msg { text: self.name.to_owned() }).await
    }

    async fn fail(&self, ctx: &mut ServerContext, _request: Msg) -> Result<Msg, Status> {
        self.record(ctx);
        Err(Status::not_found("nothing here"))
    }
}

/// Records the context and `traceparent` of every call it sends; registered inside `Tracing`.
struct SeeOutgoing(Log<Sent>);

impl ClientInterceptor for SeeOutgoing {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        self.0.lock().expect("log").push(Sent {
            context: ctx.extensions().get::<TraceContext>().copied(),
            traceparent: ctx.metadata().get_str("traceparent").map(str::to_owned),
        });
        next.run(ctx).await
    }
}

/// A channel to `addr` with `Tracing`, recording what it sends into `sent`.
async fn traced_channel(addr: SocketAddr, sent: &Log<Sent>) -> Channel {
    Channel::builder(addr)
        .interceptor(Tracing::new())
        .interceptor(SeeOutgoing(Arc::clone(sent)))
        .connect()
        .await
        .expect("connect")
}

/// Serves a `HopService` behind `Tracing`.
async fn serve_hop(name: &'static str, next: Option<HopClient>, seen: &Log<Seen>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = HopServer::new(HopService { name, next, seen: Arc::clone(seen) });
    let server = Server::builder().interceptor(Tracing::new()).add_service(service);
    tokio::spawn(server.serve_with_listener(listener, std::future::pending()));
    addr
}

/// Three servers A → B → C, each calling the next through a channel with `Tracing` that
/// records what it sends into `sent`. A client to A with `Tracing`, recording into `sent` too.
async fn three_servers(seen: &Log<Seen>, sent: &Log<Sent>) -> HopClient {
    let c = serve_hop("c", None, seen).await;
    let b = serve_hop("b", Some(HopClient::new(traced_channel(c, sent).await)), seen).await;
    let a = serve_hop("a", Some(HopClient::new(traced_channel(b, sent).await)), seen).await;
    HopClient::new(traced_channel(a, sent).await)
}

/// A server behind `Tracing`, and a client to it without.
async fn one_server(seen: &Log<Seen>) -> HopClient {
    let addr = serve_hop("a", None, seen).await;
    HopClient::new(Channel::connect(addr).await.expect("connect"))
}

/// Checks that the servers (in order A, B, C) and the calls made to each share one trace, and
/// that each server's parent is the span of the call that reached it, whose parent is the
/// span of the server that made it.
fn assert_one_trace(seen: &[Seen], sent: &[Sent]) {
    assert_eq!(seen.iter().map(|s| s.server).collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(sent.len(), 3, "the client's call, A's and B's: {sent:?}");
    let servers: Vec<TraceContext> = seen.iter().map(|s| s.current.expect("a current context")).collect();
    let calls: Vec<TraceContext> = sent.iter().map(|s| s.context.expect("an outgoing context")).collect();
    for (s, server) in seen.iter().zip(&servers) {
        assert_eq!(s.in_extensions, Some(*server), "the extensions hold the current context");
    }

    let trace = calls[0].trace_id();
    assert!(servers.iter().chain(&calls).all(|c| c.trace_id() == trace), "one trace: {seen:?} {sent:?}");
    let mut spans: Vec<SpanId> = servers.iter().chain(&calls).map(TraceContext::span_id).collect();
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), 6, "every server and every call has a span of its own");

    assert_eq!(calls[0].parent_span_id(), None, "the first call starts the trace");
    for hop in 0..3 {
        assert_eq!(servers[hop].parent_span_id(), Some(calls[hop].span_id()), "server {hop}'s parent");
        assert_eq!(sent[hop].traceparent, Some(calls[hop].to_string()), "call {hop}'s traceparent");
    }
    for hop in 1..3 {
        assert_eq!(calls[hop].parent_span_id(), Some(servers[hop - 1].span_id()), "call {hop}'s parent");
    }
}

#[tokio::test]
async fn a_unary_call_through_three_servers_is_one_trace_each_server_a_child_of_its_caller() {
    let (seen, sent) = (Log::default(), Log::default());
    let client = three_servers(&seen, &sent).await;
    client.hop(Msg { text: "hi".into() }).await.expect("call");
    assert_one_trace(&entries(&seen), &entries(&sent));
}

#[tokio::test]
async fn a_streaming_call_through_three_servers_is_one_trace_each_server_a_child_of_its_caller() {
    let (seen, sent) = (Log::default(), Log::default());
    let client = three_servers(&seen, &sent).await;
    let mut stream = client.hops(Msg { text: "hi".into() }).await.expect("open");
    let mut got = Vec::new();
    while let Some(message) = stream.message().await.expect("message") {
        got.push(message.text);
    }
    assert_eq!(got, ["c", "b", "a"]);
    assert_one_trace(&entries(&seen), &entries(&sent));
}

#[tokio::test]
async fn a_call_without_traceparent_starts_a_new_sampled_trace() {
    let seen = Log::default();
    let client = one_server(&seen).await;
    client.hop(Msg::default()).await.expect("first");
    client.hop(Msg::default()).await.expect("second");
    let seen = entries(&seen);
    let contexts: Vec<TraceContext> = seen.iter().map(|s| s.current.expect("a context")).collect();
    for context in &contexts {
        assert_eq!(context.parent_span_id(), None, "a root: {context:?}");
        assert!(context.is_sampled());
    }
    assert_ne!(contexts[0].trace_id(), contexts[1].trace_id(), "each call is a trace of its own");
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued_with_its_trace_id_and_sampled_flag() {
    let seen = Log::default();
    let client = one_server(&seen).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    client.hop(Msg::default()).metadata("traceparent", traceparent).await.expect("call");
    let context = entries(&seen)[0].current.expect("a context");
    assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(context.parent_span_id().map(|p| p.to_string()).as_deref(), Some("00f067aa0ba902b7"));
    assert_ne!(context.span_id().to_string(), "00f067aa0ba902b7", "a span of its own");
    assert!(!context.is_sampled(), "the caller's flag is kept");
}

#[tokio::test]
async fn an_invalid_traceparent_is_ignored_and_a_new_trace_started() {
    let seen = Log::default();
    let client = one_server(&seen).await;
    let invalid = [
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    ];
    for value in invalid {
        client
            .hop(Msg::default())
            .metadata("traceparent", value)
            .metadata("tracestate", "vendor=ignored")
            .await
            .unwrap_or_else(|status| panic!("{value:?} fails the call: {status}"));
    }
    for (seen, value) in entries(&seen).iter().zip(invalid) {
        let context = seen.current.expect("a context");
        assert_eq!(context.parent_span_id(), None, "{value:?} is not continued");
        assert_ne!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736", "{value:?}");
    }
}

#[tokio::test]
async fn two_traceparents_are_ignored() {
    let seen = Log::default();
    let client = one_server(&seen).await;
    client
        .hop(Msg::default())
        .metadata("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .metadata("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .await
        .expect("call");
    assert_eq!(entries(&seen)[0].current.expect("a context").parent_span_id(), None);
}

#[tokio::test]
async fn tracestate_is_passed_on_with_a_valid_traceparent_only() {
    let (seen, sent) = (Log::default(), Log::default());
    let b = serve_hop("b", None, &seen).await;
    let a = serve_hop("a", Some(HopClient::new(traced_channel(b, &sent).await)), &seen).await;
    let client = HopClient::new(Channel::connect(a).await.expect("connect"));
    let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for traceparent in [valid, "00-nonsense"] {
        client
            .hop(Msg::default())
            .metadata("traceparent", traceparent)
            .metadata("tracestate", "vendor=1")
            .metadata("tracestate", "other=2")
            .await
            .expect("call");
    }
    let at_b: Vec<Option<String>> =
        entries(&seen).into_iter().filter(|s| s.server == "b").map(|s| s.tracestate).collect();
    assert_eq!(at_b, [Some("vendor=1,other=2".to_owned()), None]);
}

#[tokio::test]
async fn calls_in_a_root_scope_join_its_trace() {
    let (seen, sent) = (Log::default(), Log::default());
    let addr = serve_hop("a", None, &seen).await;
    let client = HopClient::new(traced_channel(addr, &sent).await);
    let root = TraceContext::root();
    assert_eq!(TraceContext::current(), None, "no context outside a scope");
    root.scope(async {
        assert_eq!(TraceContext::current(), Some(root));
        client.hop(Msg::default()).await.expect("first");
        let mut stream = client.hops(Msg::default()).await.expect("open");
        while stream.message().await.expect("message").is_some() {}
    })
    .await;
    let sent = entries(&sent);
    assert_eq!(sent.len(), 2);
    for call in sent {
        let context = call.context.expect("a context");
        assert_eq!((context.trace_id(), context.parent_span_id()), (root.trace_id(), Some(root.span_id())));
    }
    for server in entries(&seen) {
        assert_eq!(server.current.expect("a context").trace_id(), root.trace_id());
    }
}

#[tokio::test]
async fn a_client_outside_any_call_continues_a_traceparent_set_on_the_call() {
    let (seen, sent) = (Log::default(), Log::default());
    let addr = serve_hop("a", None, &seen).await;
    let client = HopClient::new(traced_channel(addr, &sent).await);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    client.hop(Msg::default()).metadata("traceparent", traceparent).await.expect("call");
    let context = entries(&sent)[0].context.expect("a context");
    assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(context.parent_span_id().map(|p| p.to_string()).as_deref(), Some("00f067aa0ba902b7"));
    let server = entries(&seen)[0].current.expect("a context");
    assert_eq!(server.parent_span_id(), Some(context.span_id()), "the set value was replaced");
}

#[test]
fn traceparent_round_trips_through_parse_and_format() {
    let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let context = TraceContext::parse(value).expect("valid");
    assert_eq!(context.trace_id().to_u128(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(context.span_id().to_u64(), 0x00f067aa0ba902b7);
    assert!(context.is_sampled());
    assert_eq!(context.to_string(), value);

    let unsampled = "00-0000000000000000000000000000000a-000000000000000b-00";
    assert_eq!(TraceContext::parse(unsampled).expect("valid").to_string(), unsampled);

    for _ in 0..100 {
        let root = TraceContext::root();
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
        let child = root.child();
        let parsed = TraceContext::parse(&child.to_string()).expect("valid");
        assert_eq!((parsed.trace_id(), parsed.span_id()), (child.trace_id(), child.span_id()));
    }

    let built = TraceContext::new(
        TraceId::from_u128(1).expect("non-zero"),
        SpanId::from_u64(2).expect("non-zero"),
        false,
    );
    assert_eq!(built.to_string(), "00-00000000000000000000000000000001-0000000000000002-00");
    assert_eq!((TraceId::from_u128(0), SpanId::from_u64(0)), (None, None), "zero ids are invalid");
}

#[test]
fn traceparent_parsing_follows_the_w3c_rules() {
    let id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let span = "00f067aa0ba902b7";
    let valid = [
        (format!("00-{id}-{span}-01"), true),
        (format!("00-{id}-{span}-00"), false),
        // Flags other than `sampled` are ignored.
        (format!("00-{id}-{span}-09"), true),
        (format!("00-{id}-{span}-fe"), false),
        (format!(" 00-{id}-{span}-01\t"), true),
        // A later version: its extra fields are ignored, its flags read.
        (format!("01-{id}-{span}-01"), true),
        (format!("cc-{id}-{span}-00-what-the-future-holds"), false),
    ];
    for (value, sampled) in &valid {
        let context = TraceContext::parse(value).unwrap_or_else(|| panic!("{value:?} is valid"));
        assert_eq!(context.trace_id().to_string(), id, "{value:?}");
        assert_eq!(context.span_id().to_string(), span, "{value:?}");
        assert_eq!(context.is_sampled(), *sampled, "{value:?}");
        assert_eq!(context.parent_span_id(), None, "{value:?}");
    }
    let invalid = [
        String::new(),
        format!("00-{id}-{span}"),
        format!("00-{id}-{span}-01-"),
        format!("00-{id}-{span}-010"),
        format!("01-{id}-{span}-01x"),
        format!("ff-{id}-{span}-01"),
        format!("0-{id}-{span}-01"),
        format!("00_{id}-{span}-01"),
        format!("00-{id}_{span}-01"),
        format!("00-{id}-{span}_01"),
        format!("00-{}-{span}-01", id.to_uppercase()),
        format!("00-{id}-{}-01", span.to_uppercase()),
        format!("00-{id}-{span}-0G"),
        format!("0g-{id}-{span}-01"),
        format!("00-{}-{span}-01", "0".repeat(32)),
        format!("00-{id}-{}-01", "0".repeat(16)),
        format!("00-{}-{span}-01", &id[1..]),
        format!("00-+{}-{span}-01", &id[1..]),
        format!("00-{id}-+{}-01", &span[1..]),
    ];
    for value in &invalid {
        assert_eq!(TraceContext::parse(value), None, "{value:?} is invalid");
    }
}

/// The fields of a span or an event, as strings.
type Fields = BTreeMap<String, String>;

/// A closed span: its name, fields and the events recorded inside it.
#[derive(Debug, Clone)]
struct Closed {
    name: &'static str,
    fields: Fields,
    events: Vec<Fields>,
}

/// A `tracing` layer that keeps the spans named `rpc.*` when they close.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<Closed>>>);

struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: LayerContext<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Closed {
                name: attrs.metadata().name(),
                fields,
                events: Vec::new(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(closed) = span.extensions_mut().get_mut::<Closed>()
        {
            values.record(&mut FieldVisitor(&mut closed.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.event_span(event)
            && let Some(closed) = span.extensions_mut().get_mut::<Closed>()
        {
            let mut fields = Fields::new();
            fields.insert("level".into(), event.metadata().level().to_string());
            event.record(&mut FieldVisitor(&mut fields));
            closed.events.push(fields);
        }
    }

    fn on_close(&self, id: Id, ctx: LayerContext<'_, S>) {
        if let Some(span) = ctx.span(&id)
            && let Some(closed) = span.extensions_mut().remove::<Closed>()
            && closed.name.starts_with("rpc.")
        {
            self.0.lock().expect("log").push(closed);
        }
    }
}

impl SpanLog {
    fn named(&self, name: &str) -> Vec<Closed> {
        self.0.lock().expect("log").iter().filter(|c| c.name == name).cloned().collect()
    }
}

// A current-thread runtime: the servers, the channel and the test share the thread, and so
// the thread's default subscriber.
#[tokio::test(flavor = "current_thread")]
async fn spans_record_method_peer_ids_status_and_latency_and_an_end_event() {
    let log = SpanLog::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(log.clone()));
    let (seen, sent) = (Log::default(), Log::default());
    let addr = serve_hop("a", None, &seen).await;
    let client = HopClient::new(traced_channel(addr, &sent).await);
    client.hop(Msg::default()).await.expect("call");
    assert_eq!(client.fail(Msg::default()).await.expect_err("fails").code(), Code::NotFound);
    eventually("both sides' spans of both calls closed", || {
        log.named("rpc.server").len() == 2 && log.named("rpc.client").len() == 2
    })
    .await;

    let calls: Vec<TraceContext> = entries(&sent).iter().map(|s| s.context.expect("a context")).collect();
    let servers: Vec<TraceContext> = entries(&seen).iter().map(|s| s.current.expect("a context")).collect();
    for (side, spans, contexts) in
        [("rpc.client", log.named("rpc.client"), &calls), ("rpc.server", log.named("rpc.server"), &servers)]
    {
        let methods = ["/trace.v1.Hop/Hop", "/trace.v1.Hop/Fail"];
        for ((span, context), (method, status)) in
            spans.iter().zip(contexts).zip(methods.iter().zip(["OK", "NOT_FOUND"]))
        {
            let f = &span.fields;
            assert_eq!(f.get("method").map(String::as_str), Some(*method), "{side}: {f:?}");
            assert_eq!(f.get("trace_id"), Some(&context.trace_id().to_string()), "{side}: {f:?}");
            assert_eq!(f.get("span_id"), Some(&context.span_id().to_string()), "{side}: {f:?}");
            assert_eq!(
                f.get("parent_span_id").cloned(),
                context.parent_span_id().map(|p| p.to_string()),
                "{side}: {f:?}"
            );
            assert_eq!(f.get("status").map(String::as_str), Some(status), "{side}: {f:?}");
            assert!(f.get("latency_ms").is_some_and(|l| l.parse::<f64>().is_ok()), "{side}: {f:?}");
            assert_eq!(span.events.len(), 1, "one end event: {span:?}");
            assert_eq!(span.events[0].get("status").map(String::as_str), Some(status), "{side}");
        }
    }
    let client_span = &log.named("rpc.client")[0].fields;
    assert_eq!(client_span.get("target"), Some(&addr.to_string()));
    let server_span = &log.named("rpc.server")[0].fields;
    assert!(server_span.get("peer").is_some_and(|p| p.starts_with("127.0.0.1:")), "{server_span:?}");
    assert_eq!(servers[1].parent_span_id(), Some(calls[1].span_id()));
}
