//! Prometheus metrics: per-method counts, errors, calls in flight and latencies, for the
//! calls a server handles and those a client makes. See [`Metrics`].

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::interceptor::ServerContext;
use crate::interceptor::{ClientContext, ClientInterceptor, ClientNext, Run, ServerInterceptor, ServerNext};
use crate::method::MethodName;
use crate::status::{Code, Status};

/// Per-method counts, errors, calls in flight and latencies, in the Prometheus text format
/// (feature `metrics`).
///
/// One value holds one registry; its clones share it, so the same value can be registered on
/// servers and channels and rendered from an HTTP endpoint. Each side has its own series,
/// labelled by the full method name (`method="/helloworld.Greeter/SayHello"`):
///
/// | series | type | what it counts |
/// |---|---|---|
/// | `rpc_server_requests_total{method}` | counter | calls that ended, whatever their outcome |
/// | `rpc_server_errors_total{method,code}` | counter | calls that ended with an error, by code (`NOT_FOUND`, ...) |
/// | `rpc_server_requests_in_flight{method}` | gauge | calls started and not yet ended |
/// | `rpc_server_request_duration_seconds{method}` | histogram | from start to end, in seconds ([buckets](Metrics::LATENCY_BUCKETS)) |
///
/// and the same four as `rpc_client_*`. A streaming call ends when its stream has: it is
/// counted then, and is in flight until then. A call abandoned before it ends (its deadline
/// passed, the caller went away) counts as `DEADLINE_EXCEEDED` or `CANCELLED`; one whose
/// handler panicked as `INTERNAL`. On a client, the place of `Metrics` in the chain decides
/// what a call is: inside [`Retry`](crate::middleware::Retry) each attempt counts, outside
/// it the call as a whole.
///
/// ```no_run
/// use rpc_core::middleware::Metrics;
/// use rpc_core::{Channel, Server};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let metrics = Metrics::new();
/// let server = Server::builder().interceptor(metrics.clone());
/// let channel = Channel::builder("127.0.0.1:50051").interceptor(metrics.clone()).connect().await?;
/// // Answer each scrape with the content type `Metrics::CONTENT_TYPE` and this body:
/// let body: String = metrics.render();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    server: Series,
    client: Series,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// The content type of [`render`](Metrics::render)'s text, for the HTTP response to a
    /// scrape: the OpenMetrics text format, which Prometheus reads.
    pub const CONTENT_TYPE: &'static str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// The upper bounds of the latency histograms' buckets, in seconds: from half a
    /// millisecond, where calls within a host land, to ten seconds.
    pub const LATENCY_BUCKETS: [f64; 14] =
        [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

    /// Empty series for both sides, in a registry of their own.
    pub fn new() -> Metrics {
        let (server, client) = (Series::default(), Series::default());
        let mut registry = Registry::default();
        server.register(&mut registry, "server");
        client.register(&mut registry, "client");
        Metrics { inner: Arc::new(Inner { registry, server, client }) }
    }

    /// The series in the text exposition format (OpenMetrics, ending in `# EOF`). A series
    /// appears once it has a sample: after the first call of its side (and, for the errors,
    /// the first error).
    ///
    /// ```
    /// use rpc_core::middleware::Metrics;
    ///
    /// let text = Metrics::new().render();
    /// assert_eq!(text, "# EOF\n", "no calls yet");
    /// ```
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a `String` cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// Registers the same series in another registry too (say the application's, perhaps a
    /// sub-registry with a prefix), so one scrape shows them with the rest.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    /// use rpc_core::middleware::Metrics;
    ///
    /// let mut registry = Registry::default();
    /// let metrics = Metrics::new();
    /// metrics.register(&mut registry);
    /// ```
    pub fn register(&self, registry: &mut Registry) {
        self.inner.server.register(registry, "server");
        self.inner.client.register(registry, "client");
    }
}

impl ServerInterceptor for Metrics {
    /// Counts the call in the `rpc_server_*` series.
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        self.inner.server.observe(MethodName::from_static(ctx.method()), next.run(ctx)).await
    }
}

impl ClientInterceptor for Metrics {
    /// Counts the call in the `rpc_client_*` series.
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        self.inner.client.observe(ctx.method_name().clone(), next.run(ctx)).await
    }
}

/// A method's label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    method: MethodLabel,
}

/// A method's and an error code's labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    method: MethodLabel,
    code: &'static str,
}

/// A method name as a label value: copied (or, for a name made at run time, shared) per call,
/// never formatted until the metrics are rendered.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MethodLabel(MethodName);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.as_str().encode(encoder)
    }
}

/// The four series of one side.
struct Series {
    requests: Family<MethodLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    in_flight: Family<MethodLabels, Gauge>,
    duration: Family<MethodLabels, Histogram>,
}

impl Default for Series {
    fn default() -> Series {
        Series {
            requests: Family::default(),
            errors: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(Metrics::LATENCY_BUCKETS)),
        }
    }
}

impl Series {
    /// Registers the series as `rpc_<side>_...`.
    fn register(&self, registry: &mut Registry, side: &str) {
        registry.register(
            format!("rpc_{side}_requests"),
            format!("RPC calls that ended on the {side} side, whatever their outcome"),
            self.requests.clone(),
        );
        registry.register(
            format!("rpc_{side}_errors"),
            format!("RPC calls that ended with an error on the {side} side, by status code"),
            self.errors.clone(),
        );
        registry.register(
            format!("rpc_{side}_requests_in_flight"),
            format!("RPC calls started and not yet ended on the {side} side"),
            self.in_flight.clone(),
        );
        registry.register_with_unit(
            format!("rpc_{side}_request_duration"),
            format!("Time from the start to the end of RPC calls on the {side} side"),
            Unit::Seconds,
            self.duration.clone(),
        );
    }

    /// Runs `call`, counting it in flight until it ends, then counting its end.
    async fn observe(&self, method: MethodName, call: Run<'_>) -> Result<(), Status> {
        let method = MethodLabel(method);
        let labels = MethodLabels { method: method.clone() };
        let started = Instant::now();
        self.in_flight.get_or_create(&labels).inc();
        call.on_end(move |outcome| {
            let code = outcome.as_ref().map_or_else(Status::code, |()| Code::Ok);
            self.in_flight.get_or_create(&labels).dec();
            self.requests.get_or_create(&labels).inc();
            if code != Code::Ok {
                self.errors.get_or_create(&ErrorLabels { method, code: code.as_str() }).inc();
            }
            self.duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        })
        .await
    }
}
