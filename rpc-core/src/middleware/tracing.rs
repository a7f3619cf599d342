//! Tracing: a `tracing` span around every call, and W3C trace context carried from call to
//! call in the `traceparent` metadata key. See [`Tracing`] and [`TraceContext`].

use std::fmt;
use std::future::Future;
use std::num::{NonZeroU64, NonZeroU128};
use std::time::Instant;

use bytes::Bytes;
use tracing::field::Empty;
use tracing::{Instrument, Level, Span};

use crate::interceptor::ServerContext;
use crate::interceptor::{ClientContext, ClientInterceptor, ClientNext, ServerInterceptor, ServerNext};
use crate::metadata::Metadata;
use crate::status::{Code, Status};

/// The metadata key of the W3C trace context.
const TRACEPARENT: &str = "traceparent";
/// The metadata key of the W3C vendor trace state.
const TRACESTATE: &str = "tracestate";

/// The length of a version `00` `traceparent`: `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

tokio::task_local! {
    /// The trace context of the call this task is handling (or of a [`TraceContext::scope`]).
    static CURRENT: Current;
}

/// What the task-local holds: the context, and the caller's trace state to pass on.
#[derive(Debug, Clone)]
struct Current {
    context: TraceContext,
    state: Option<Bytes>,
}

/// A 16-byte W3C trace id, never zero. Displays as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZeroU128);

impl TraceId {
    /// A random id (never zero).
    pub fn random() -> TraceId {
        TraceId(NonZeroU128::MIN.saturating_add(fastrand::u128(..u128::MAX)))
    }

    /// The id with this value; `None` for zero, which the specification reserves as invalid.
    pub fn from_u128(value: u128) -> Option<TraceId> {
        NonZeroU128::new(value).map(TraceId)
    }

    /// The id's value: its 16 bytes read big-endian.
    pub fn to_u128(self) -> u128 {
        self.0.get()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// An 8-byte W3C span id (the `parent-id` of a `traceparent`), never zero. Displays as
/// 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

impl SpanId {
    /// A random id (never zero).
    pub fn random() -> SpanId {
        SpanId(NonZeroU64::MIN.saturating_add(fastrand::u64(..u64::MAX)))
    }

    /// The id with this value; `None` for zero, which the specification reserves as invalid.
    pub fn from_u64(value: u64) -> Option<SpanId> {
        NonZeroU64::new(value).map(SpanId)
    }

    /// The id's value: its 8 bytes read big-endian.
    pub fn to_u64(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// A W3C trace context: which trace a call belongs to, its span in that trace, the span
/// that caused it (when known) and whether the trace is sampled.
///
/// It travels in the `traceparent` metadata key as
/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; [`Display`](fmt::Display) writes
/// that form and [`parse`](TraceContext::parse) reads it. Inside a call served behind
/// [`Tracing`], [`TraceContext::current`] is that call's context (it is also in the call's
/// [extensions](crate::ServerContext::extensions)); on the client, an interceptor inside `Tracing`
/// finds the outgoing call's context in the [`ClientContext`] extensions.
///
/// ```
/// use rpc_core::middleware::TraceContext;
///
/// let incoming = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
///     .expect("a valid traceparent");
/// assert!(incoming.is_sampled());
///
/// // A call made on its behalf: same trace, a span of its own, the incoming span as parent.
/// let child = incoming.child();
/// assert_eq!(child.trace_id(), incoming.trace_id());
/// assert_ne!(child.span_id(), incoming.span_id());
/// assert_eq!(child.parent_span_id(), Some(incoming.span_id()));
///
/// // Invalid values are no context at all.
/// assert_eq!(TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    parent_span_id: Option<SpanId>,
    sampled: bool,
}

impl TraceContext {
    /// A context with these ids and sampled flag, and no parent span.
    pub fn new(trace_id: TraceId, span_id: SpanId, sampled: bool) -> TraceContext {
        TraceContext { trace_id, span_id, parent_span_id: None, sampled }
    }

    /// The start of a new trace: random ids, no parent, sampled.
    ///
    /// Run calls inside [`scope`](TraceContext::scope) to make them one trace:
    ///
    /// ```no_run
    /// # async fn job() {}
    /// use rpc_core::middleware::TraceContext;
    ///
    /// # async fn run() {
    /// // Every call `job` makes through a channel with `Tracing` joins this trace.
    /// TraceContext::root().scope(job()).await;
    /// # }
    /// ```
    pub fn root() -> TraceContext {
        TraceContext::new(TraceId::random(), SpanId::random(), true)
    }

    /// A span caused by this one: the same trace and flag, a new span id, this span as parent.
    pub fn child(&self) -> TraceContext {
        TraceContext { span_id: SpanId::random(), parent_span_id: Some(self.span_id), ..*self }
    }

    /// The context of the call this task is handling behind [`Tracing`] (or of the
    /// [`scope`](TraceContext::scope) it runs in); `None` outside of one.
    ///
    /// ```
    /// use rpc_core::middleware::TraceContext;
    /// use rpc_core::{ServerContext, Status};
    ///
    /// async fn handler(_ctx: &mut ServerContext) -> Result<(), Status> {
    ///     if let Some(trace) = TraceContext::current() {
    ///         tracing::info!(trace_id = %trace.trace_id(), "working on it");
    ///     }
    ///     Ok(())
    /// }
    /// ```
    pub fn current() -> Option<TraceContext> {
        CURRENT.try_with(|current| current.context).ok()
    }

    /// Runs `future` with this context as [current](TraceContext::current), so the calls it
    /// makes through a channel with [`Tracing`] are children of it.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(Current { context: self, state: None }, future)
    }

    /// Reads a `traceparent` value; `None` if it is not valid.
    ///
    /// Follows the W3C Trace ServerContext rules: lowercase hex only; a trace id and a span id that
    /// are not all zeros; version `ff` is invalid; version `00` is exactly 55 characters; a
    /// later version may carry more fields after a `-`, which are ignored. Surrounding spaces
    /// and tabs are allowed. The parsed context's span is the caller's: it has no parent.
    pub fn parse(value: &str) -> Option<TraceContext> {
        let value = value.trim_matches([' ', '\t']).as_bytes();
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex(&value[0..2])?;
        let well_formed = version != 0xff
            && value[2] == b'-'
            && value[35] == b'-'
            && value[52] == b'-'
            && match version {
                0 => value.len() == TRACEPARENT_LEN,
                _ => value.get(TRACEPARENT_LEN).is_none_or(|&b| b == b'-'),
            };
        if !well_formed {
            return None;
        }
        let trace_id = TraceId::from_u128(hex(&value[3..35])?)?;
        let span_id = SpanId::from_u64(u64::try_from(hex(&value[36..52])?).ok()?)?;
        let flags = hex(&value[53..55])?;
        Some(TraceContext::new(trace_id, span_id, flags & 1 == 1))
    }

    /// The trace this context belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This context's span.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// The span that caused this one, if known: for a server's call, the client's span.
    pub fn parent_span_id(&self) -> Option<SpanId> {
        self.parent_span_id
    }

    /// Whether the trace is sampled (the `traceparent` flag `01`).
    pub fn is_sampled(&self) -> bool {
        self.sampled
    }

    /// The context in `metadata`: exactly one valid `traceparent`, and the `tracestate` to
    /// pass on with it.
    fn from_metadata(metadata: &Metadata) -> Option<(TraceContext, Option<Bytes>)> {
        let mut values = metadata.get_all(TRACEPARENT);
        let (Some(value), None) = (values.next(), values.next()) else {
            return None;
        };
        let context = TraceContext::parse(std::str::from_utf8(value).ok()?)?;
        Some((context, trace_state(metadata)))
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` value: `00-<trace id>-<span id>-<flags>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", self.trace_id, self.span_id, u8::from(self.sampled))
    }
}

/// The value of lowercase hex digits (at most 32); `None` for any other character.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |value, &digit| {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        Some(value << 4 | u128::from(nibble))
    })
}

/// The `tracestate` entries of `metadata`, joined with `,`, if they are short enough and
/// visible ASCII; `None` otherwise.
fn trace_state(metadata: &Metadata) -> Option<Bytes> {
    let mut joined = Vec::new();
    for value in metadata.get_all(TRACESTATE) {
        if !joined.is_empty() {
            joined.push(b',');
        }
        joined.extend_from_slice(value);
        if joined.len() > Tracing::MAX_TRACESTATE_LEN {
            return None;
        }
    }
    let printable = joined.iter().all(|b| matches!(b, b' '..=b'~'));
    (!joined.is_empty() && printable).then(|| Bytes::from(joined))
}

/// A `tracing` span around every call, and W3C trace context carried from call to call in
/// the `traceparent` metadata key.
///
/// One value serves both sides:
///
/// - **Server.** It continues the caller's trace (from a valid `traceparent`; otherwise it
///   starts one) with a fresh span id, and runs the rest of the chain and the handler inside
///   an `rpc.server` span, with that [`TraceContext`] as [current](TraceContext::current).
/// - **Client.** It makes each call a child of the current trace context (outside a served
///   call: of a `traceparent` already in the call's metadata, or of a new trace), sends it as
///   `traceparent`, and runs the call inside an `rpc.client` span.
///
/// So a handler that calls other services through a channel with `Tracing` extends its
/// caller's trace with no code of its own, for unary and streaming calls alike.
///
/// The spans (at `INFO`) carry the fields `method`, `peer` (server) or `target` (client),
/// `trace_id`, `span_id`, `parent_span_id` (when there is one) and, once the call has ended,
/// `status` (the code's name, `OK` included) and `latency_ms`. An event inside the span marks
/// the end, at `WARN` for codes that point at the server (`UNKNOWN`, `DEADLINE_EXCEEDED`,
/// `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS`), at `INFO` otherwise. A call whose
/// future is dropped before it ends (its deadline passed, the caller cancelled) ends with
/// `DEADLINE_EXCEEDED` or `CANCELLED`; one whose handler panicked with `INTERNAL`.
///
/// A `tracestate` that arrives with a valid `traceparent` is passed on, unchanged, to the
/// calls the handler makes, if it is at most [`MAX_TRACESTATE_LEN`](Tracing::MAX_TRACESTATE_LEN)
/// bytes of visible ASCII. The sampled flag travels from caller to callee, and new traces are
/// sampled; spans are recorded whatever its value, for the subscriber to filter.
///
/// ```no_run
/// use rpc_core::middleware::Tracing;
/// use rpc_core::{Channel, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // Server: every call gets a span and continues its caller's trace.
/// let server = Server::builder().interceptor(Tracing::new());
/// // Client: every call carries the trace context of the call being handled, if any.
/// let channel = Channel::builder("127.0.0.1:50051").interceptor(Tracing::new()).connect().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Tracing {
    _private: (),
}

impl Tracing {
    /// The longest `tracestate` passed on, in bytes: the length the W3C Trace ServerContext
    /// specification asks every participant to propagate. A longer one is dropped.
    pub const MAX_TRACESTATE_LEN: usize = 512;

    /// The interceptor.
    pub fn new() -> Tracing {
        Tracing::default()
    }
}

impl ServerInterceptor for Tracing {
    /// Continues the caller's trace (or starts one) and runs the call in an `rpc.server`
    /// span, with its [`TraceContext`] current.
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        let (context, state) = match TraceContext::from_metadata(ctx.metadata()) {
            Some((caller, state)) => (caller.child(), state),
            None => (TraceContext::root(), None),
        };
        let span = tracing::info_span!(
            "rpc.server",
            method = ctx.method(),
            peer = %ctx.peer(),
            trace_id = %context.trace_id,
            span_id = %context.span_id,
            parent_span_id = context.parent_span_id.map(display),
            status = Empty,
            latency_ms = Empty,
        );
        ctx.extensions_mut().insert(context);
        let (started, ended) = (Instant::now(), span.clone());
        let call = next.run(ctx).on_end(move |outcome| record_end(&ended, started, outcome));
        CURRENT.scope(Current { context, state }, call).instrument(span).await
    }
}

impl ClientInterceptor for Tracing {
    /// Makes the call a child of the current trace context (or of a `traceparent` already
    /// in its metadata, or a new trace), sends it as `traceparent`, and runs the call in an
    /// `rpc.client` span.
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let current = CURRENT.try_with(|current| (current.context, current.state.clone())).ok();
        let (parent, state) = match current {
            Some((context, state)) => (Some(context), state),
            None => (TraceContext::from_metadata(ctx.metadata()).map(|(context, _)| context), None),
        };
        let context = parent.map_or_else(TraceContext::root, |parent| parent.child());
        ctx.metadata_mut().insert(TRACEPARENT, context.to_string());
        if let Some(state) = state {
            ctx.metadata_mut().insert(TRACESTATE, state);
        }
        ctx.extensions_mut().insert(context);
        let span = tracing::info_span!(
            "rpc.client",
            method = ctx.method(),
            target = ctx.target(),
            trace_id = %context.trace_id,
            span_id = %context.span_id,
            parent_span_id = context.parent_span_id.map(display),
            status = Empty,
            latency_ms = Empty,
        );
        let (started, ended) = (Instant::now(), span.clone());
        next.run(ctx).on_end(move |outcome| record_end(&ended, started, outcome)).instrument(span).await
    }
}

/// Records the end of a call on its span, and an event inside it.
fn record_end(span: &Span, started: Instant, outcome: &Result<(), Status>) {
    let (code, message) = match outcome {
        Ok(()) => (Code::Ok, ""),
        Err(status) => (status.code(), status.message()),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.record("status", code.as_str());
    span.record("latency_ms", latency_ms);
    let status = code.as_str();
    if points_at_server(code) {
        tracing::event!(parent: span, Level::WARN, status, message, latency_ms, "rpc call ended");
    } else {
        tracing::event!(parent: span, Level::INFO, status, message, latency_ms, "rpc call ended");
    }
}

/// Whether a call that ended with `code` suggests something wrong on the serving side.
fn points_at_server(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// `future`, run in the trace context of the call this task is handling (if any).
pub(super) fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    match CURRENT.try_with(Current::clone) {
        Ok(current) => futures_util::future::Either::Left(CURRENT.scope(current, future)),
        Err(_) => futures_util::future::Either::Right(future),
    }
}
