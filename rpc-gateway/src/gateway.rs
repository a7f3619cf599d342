//! The gateway: HTTP requests in, calls out over balanced channels, answers back as JSON.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method as HttpMethod, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use rpc_core::codec::BytesCodec;
use rpc_core::interceptor::{ServerChain, ServerInterceptor};
use rpc_core::metadata::MetadataKey;
use rpc_core::method::MethodKind;
use rpc_core::middleware::{Metrics, TraceContext, Tracing};
use rpc_core::transport::PeerAddr;
use rpc_core::transport::tls::TlsWatcher;
use rpc_core::{Channel, Metadata, ServerContext, Status};
use rpc_dynamic::{JsonOptions, Method, Schema, json};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Error;
use crate::route::{Binding, BodyMapping, bindings};
use crate::status::{error_json, error_response};
use crate::transcode::request_json;

/// The largest request body accepted by default: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// Responses of a streaming call buffered between the upstream and the HTTP client: past
/// this many, the gateway stops reading from the upstream until the client catches up.
const STREAM_BUFFER: usize = 16;

/// The prefix of headers that carry metadata both ways (`grpc-metadata-x-id: 1` arrives as
/// metadata `x-id`; response metadata goes out under it), as grpc-gateway names them.
const METADATA_PREFIX: &str = "grpc-metadata-";

/// One method the gateway serves: its schema, the name calls go out under, its channel.
struct Target {
    method: Method,
    /// The full name, made once per method for the interceptors' [`ServerContext`].
    name: &'static str,
    channel: Channel,
}

/// A REST binding and the method it reaches.
struct Route {
    binding: Binding,
    target: Arc<Target>,
}

struct Inner {
    /// `/pkg.Service/Method` to its method, for `POST`s by name.
    by_name: HashMap<String, Arc<Target>>,
    /// The `google.api.http` bindings, tried in the order of the schema.
    routes: Vec<Route>,
    chain: ServerChain,
    metrics: Metrics,
    max_body: usize,
    timeout: Option<Duration>,
    json: JsonOptions,
    _tls_watchers: Vec<TlsWatcher>,
}

/// An HTTP/JSON gateway in front of services. Build one with [`Gateway::builder`] (or
/// [`Gateway::from_config`]), then [`serve`](Gateway::serve) it or mount its
/// [`router`](Gateway::router).
///
/// Each method is served at `POST /pkg.Service/Method` with its request as the JSON body,
/// and at the REST paths its `google.api.http` annotation declares. A call runs through the
/// gateway's interceptors (metrics, tracing, then those added with
/// [`interceptor`](GatewayBuilder::interceptor): auth, rate limits), as a server runs its
/// own, and goes on through the service's channel, which balances over its instances.
///
/// | request | answer |
/// |---|---|
/// | unary, client streaming | `200` and the response as JSON |
/// | server streaming, bidirectional | `200` and one JSON object per line (`application/x-ndjson`), or server-sent events when the request accepts `text/event-stream`; a status that ends the stream after it began is a last `{"error": {...}}` line (or an `error` event) |
/// | a failed call | the HTTP code grpc-gateway gives its status ([`http_status`](crate::http_status)) and `{"code", "status", "message", "details"}` |
/// | malformed JSON, a field that does not fit | `400`, the reason naming the field |
/// | a body over the limit | `400`, saying so, before it is read further |
/// | no route | `404`; a known path with another verb, `405` |
///
/// A client- or bidirectional-streaming method takes its requests as a JSON array, or as
/// JSON objects one after another (newline-delimited JSON), all in the one body: HTTP/1.1
/// carries a bidirectional call half-duplex, every request before the first response.
///
/// Headers that reach the service as metadata: `authorization`, `traceparent`,
/// `tracestate`, every `x-*` header, and `grpc-metadata-<key>` as `<key>`. The response's
/// metadata comes back as `grpc-metadata-<key>` headers, with the gateway's `traceparent`.
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("methods", &self.inner.by_name.len())
            .field("routes", &self.inner.routes.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Gateway`]: the schema, a channel per service, the interceptors.
pub struct GatewayBuilder {
    schema: Schema,
    channels: HashMap<String, Channel>,
    chain: ServerChain,
    metrics: Metrics,
    max_body: usize,
    timeout: Option<Duration>,
    json: JsonOptions,
    /// What reloads the upstreams' TLS files (from a configuration): they live as long as
    /// the gateway.
    tls_watchers: Vec<TlsWatcher>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("services", &self.channels.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Sends the calls to `service` (its full name, `pkg.Service`) through `channel`: one
    /// address, or balanced over a registry's instances
    /// ([`Channel::balanced`](rpc_core::Channel::balanced) with the in-process, static or
    /// etcd registry). Services without a channel are not served.
    pub fn upstream(mut self, service: impl Into<String>, channel: Channel) -> GatewayBuilder {
        self.channels.insert(service.into(), channel);
        self
    }

    /// Runs `interceptor` around every call at the edge, inside the metrics and tracing the
    /// gateway always runs, in the order added: [`JwtAuth`](rpc_core::middleware::JwtAuth),
    /// [`RateLimit`](rpc_core::middleware::RateLimit) or any
    /// [`ServerInterceptor`].
    pub fn interceptor(mut self, interceptor: impl ServerInterceptor) -> GatewayBuilder {
        self.chain = self.chain.with(interceptor);
        self
    }

    /// The largest request body accepted (default [`DEFAULT_MAX_BODY_BYTES`]).
    pub fn max_body_bytes(mut self, limit: usize) -> GatewayBuilder {
        self.max_body = limit;
        self
    }

    /// The time each call is allowed (default: none).
    pub fn timeout(mut self, timeout: Duration) -> GatewayBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// How responses are written as JSON (default: the canonical mapping, lowerCamelCase
    /// names, default values left out).
    pub fn json_options(mut self, options: JsonOptions) -> GatewayBuilder {
        self.json = options;
        self
    }

    /// The gateway.
    ///
    /// # Errors
    /// [`Error::Config`] when a channel is given for a service the schema does not have, or
    /// a method's `google.api.http` path template does not parse.
    pub fn build(self) -> Result<Gateway, Error> {
        for service in self.channels.keys() {
            if self.schema.service(service).is_err() {
                return Err(Error::Config(format!("the schema has no service {service}")));
            }
        }
        let mut by_name = HashMap::new();
        let mut routes = Vec::new();
        for method in self.schema.methods() {
            let service = method.descriptor().parent_service().full_name().to_owned();
            let Some(channel) = self.channels.get(&service) else {
                continue;
            };
            let path = method.path().as_str().to_owned();
            // Once per method of the schema: the interceptors' contexts name it statically.
            let name: &'static str = Box::leak(path.clone().into_boxed_str());
            let declared = bindings(self.schema.pool(), method.descriptor())
                .map_err(|err| Error::Config(format!("{path}: {err}")))?;
            let target = Arc::new(Target { method, name, channel: channel.clone() });
            routes.extend(declared.into_iter().map(|binding| Route { binding, target: Arc::clone(&target) }));
            by_name.insert(path, target);
        }
        Ok(Gateway {
            inner: Arc::new(Inner {
                by_name,
                routes,
                chain: self.chain,
                metrics: self.metrics,
                max_body: self.max_body,
                timeout: self.timeout,
                json: self.json,
                _tls_watchers: self.tls_watchers,
            }),
        })
    }
}

impl Gateway {
    /// A gateway for the services of `schema`; give each a channel with
    /// [`upstream`](GatewayBuilder::upstream).
    pub fn builder(schema: Schema) -> GatewayBuilder {
        let metrics = Metrics::new();
        GatewayBuilder {
            schema,
            channels: HashMap::new(),
            chain: ServerChain::new().with(metrics.clone()).with(Tracing::new()),
            metrics,
            max_body: DEFAULT_MAX_BODY_BYTES,
            timeout: None,
            json: JsonOptions::default(),
            tls_watchers: Vec::new(),
        }
    }

    /// A gateway as a [configuration](crate::Config) describes it: the schema from its
    /// `.proto` files (or the upstreams' reflection), a channel per upstream, and the auth
    /// and rate limit it asks for. Connects to every upstream before returning.
    ///
    /// # Errors
    /// [`Error::Config`] for a configuration that does not hold together;
    /// [`Error::Upstream`] when an upstream cannot be reached or its schema had.
    pub async fn from_config(config: &crate::Config) -> Result<Gateway, Error> {
        let mut channels = Vec::new();
        let mut tls_watchers = Vec::new();
        for upstream in &config.upstreams {
            let target: rpc_dynamic::Target =
                upstream.target.parse().map_err(|err: rpc_dynamic::Error| Error::Config(err.to_string()))?;
            let tls = match &upstream.tls {
                None => None,
                Some(files) => {
                    let connector = files.client_config()?.build().map_err(|err| {
                        Error::Config(format!("upstream.tls ({}): {err}", upstream.service))
                    })?;
                    // New connections to the instances (and reconnections) take the files as
                    // they are now: certificates rotate without a restart.
                    let reload = files.clone();
                    tls_watchers.push(connector.watch_files(
                        files.files(),
                        files.reload_every.unwrap_or(crate::config::DEFAULT_TLS_RELOAD_EVERY),
                        move || reload.read(|_, _, err| err),
                    ));
                    Some(connector)
                }
            };
            let options = rpc_dynamic::ChannelOptions { timeout: None, tls, ..Default::default() };
            let channel = target
                .connect(&upstream.service, &options)
                .await
                .map_err(|err| Error::Upstream(format!("{} at {target}: {err}", upstream.service)))?;
            channels.push((upstream.service.clone(), channel));
        }
        let schema = if config.protos.is_empty() {
            let Some((_, channel)) = channels.first() else {
                return Err(Error::Config("no upstream, and no .proto files: nothing to serve".into()));
            };
            let services: Vec<&str> = channels.iter().map(|(service, _)| service.as_str()).collect();
            Schema::from_reflection(channel, &services, &Metadata::new())
                .await
                .map_err(|err| Error::Upstream(format!("the schema, by reflection: {err}")))?
        } else {
            Schema::from_protos(&config.protos, &config.import_paths)
                .map_err(|err| Error::Config(err.to_string()))?
        };
        let mut builder = Gateway::builder(schema).max_body_bytes(config.max_body_bytes);
        builder.tls_watchers = tls_watchers;
        if let Some(timeout) = config.timeout {
            builder = builder.timeout(timeout);
        }
        for (service, channel) in channels {
            builder = builder.upstream(service, channel);
        }
        if let Some(auth) = &config.auth {
            let mut jwt = rpc_core::middleware::JwtAuth::hs256(&auth.hs256_secret);
            if let Some(audience) = &auth.audience {
                jwt = jwt.audience(audience);
            }
            if let Some(issuer) = &auth.issuer {
                jwt = jwt.issuer(issuer);
            }
            for method in &auth.public {
                check_pattern(method)?;
                jwt = jwt.public(method);
            }
            for rule in &auth.allow {
                check_pattern(&rule.method)?;
                jwt = jwt.allow(&rule.method, rule.roles.iter().cloned());
            }
            builder = builder.interceptor(jwt);
        }
        if let Some(limit) = &config.rate_limit {
            let mut rate = match (limit.per_second, limit.per_minute) {
                (Some(rate), None) if rate > 0 => rpc_core::middleware::RateLimit::per_second(rate),
                (None, Some(rate)) if rate > 0 => rpc_core::middleware::RateLimit::per_minute(rate),
                _ => {
                    return Err(Error::Config(
                        "rate_limit: give one of per_second and per_minute, at least 1".into(),
                    ));
                }
            };
            if let Some(burst) = limit.burst {
                rate = rate.burst(burst.max(1));
            }
            if let Some(key) = &limit.per_caller {
                rate = rate.per_caller(key.to_ascii_lowercase());
            }
            builder = builder.interceptor(rate);
        }
        builder.build()
    }

    /// The metrics of the calls through the gateway, also served at `GET /metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The gateway as an axum [`Router`]: `GET /metrics`, and every method's routes. Serve
    /// it with connect info (`into_make_service_with_connect_info::<SocketAddr>()`) for the
    /// interceptors to see the caller's address.
    pub fn router(&self) -> Router {
        Router::new().route("/metrics", get(metrics)).fallback(handle).with_state(Arc::clone(&self.inner))
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` completes, then lets the requests
    /// under way finish.
    ///
    /// # Errors
    /// The listener's error, if accepting fails for good.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).with_graceful_shutdown(shutdown).await
    }
}

/// An access pattern [`JwtAuth`](rpc_core::middleware::JwtAuth) accepts, checked here so
/// that a bad one in a configuration file is an error, not a panic.
fn check_pattern(pattern: &str) -> Result<(), Error> {
    let valid = pattern == "*"
        || pattern.strip_prefix('/').and_then(|rest| rest.split_once('/')).is_some_and(
            |(service, method)| !service.is_empty() && !method.is_empty() && !method.contains('/'),
        );
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!("{pattern:?}: expected /pkg.Service/Method, /pkg.Service/* or *")))
    }
}

async fn metrics(State(inner): State<Arc<Inner>>) -> Response {
    let mut response = inner.metrics.render().into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(Metrics::CONTENT_TYPE));
    response
}

/// Every request that is not `/metrics`: find the method, read the body, make the call.
async fn handle(State(inner): State<Arc<Inner>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(PeerAddr::Memory(0), |info| PeerAddr::Tcp(info.0));
    let path = parts.uri.path();
    let Some((target, mapping, variables)) = find(&inner, &parts.method, path) else {
        return not_routed(&inner, &parts.method, path);
    };
    let over = |limit: usize| {
        Status::invalid_argument(format!("the request body is larger than the limit of {limit} bytes"))
    };
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > inner.max_body as u64) {
        return error_response(&over(inner.max_body));
    }
    let body = match axum::body::to_bytes(body, inner.max_body).await {
        Ok(body) => body,
        Err(_) => return error_response(&over(inner.max_body)),
    };
    let call = Call {
        target: Arc::clone(&target),
        mapping,
        variables,
        query: parts.uri.query().map(str::to_owned),
        body,
        json: inner.json,
    };
    let metadata = metadata_from(&parts.headers);
    let deadline = inner.timeout.map(|timeout| Instant::now() + timeout);
    let ctx = ServerContext::from_parts(target.name, target.method.kind(), peer, metadata, deadline);
    let events = accepts_events(&parts.headers);
    match target.method.kind() {
        MethodKind::Unary | MethodKind::ClientStreaming => unary(&inner, ctx, call).await,
        MethodKind::ServerStreaming | MethodKind::BidiStreaming => streaming(&inner, ctx, call, events).await,
    }
}

/// The method a request reaches, how its body maps, and the path's variables.
type Found = (Arc<Target>, BodyMapping, Vec<(String, String)>);

/// The route `method` and `path` take, if any.
fn find(inner: &Inner, method: &HttpMethod, path: &str) -> Option<Found> {
    if method == HttpMethod::POST
        && let Some(target) = inner.by_name.get(path)
    {
        return Some((Arc::clone(target), BodyMapping::Whole, Vec::new()));
    }
    inner.routes.iter().find_map(|route| {
        if !route.binding.verb.matches(method) {
            return None;
        }
        let variables = route.binding.template.matches(path)?;
        Some((Arc::clone(&route.target), route.binding.body.clone(), variables))
    })
}

/// `404`, or `405` when the path has a route under another verb.
fn not_routed(inner: &Inner, method: &HttpMethod, path: &str) -> Response {
    let elsewhere: Vec<String> = inner
        .routes
        .iter()
        .filter(|route| route.binding.template.matches(path).is_some())
        .map(|route| route.binding.to_string())
        .chain(inner.by_name.contains_key(path).then(|| format!("POST {path}")))
        .collect();
    if elsewhere.is_empty() {
        return error_response(&Status::not_found(format!("no route for {method} {path}")));
    }
    let status = Status::unimplemented(format!("{method} {path}: this path takes {}", elsewhere.join(", ")));
    let mut response = error_response(&status);
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// The metadata an HTTP request carries to the service.
fn metadata_from(headers: &HeaderMap) -> Metadata {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let name = name.as_str();
        let key = match name.strip_prefix(METADATA_PREFIX) {
            Some(key) => key,
            None if name == "authorization"
                || name == "traceparent"
                || name == "tracestate"
                || name.starts_with("x-") =>
            {
                name
            }
            None => continue,
        };
        if let Ok(key) = MetadataKey::try_from(key.to_owned()) {
            metadata.append(key, Bytes::copy_from_slice(value.as_bytes()));
        }
    }
    metadata
}

/// Whether the client asks for server-sent events.
fn accepts_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// What a call needs from its HTTP request.
struct Call {
    target: Arc<Target>,
    mapping: BodyMapping,
    variables: Vec<(String, String)>,
    query: Option<String>,
    body: Bytes,
    json: JsonOptions,
}

impl Call {
    /// The one request of a unary or server-streaming call.
    fn request(&self) -> Result<Bytes, Status> {
        let body = if self.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(serde_json::from_slice::<Value>(&self.body).map_err(|err| bad_json(&err))?)
        };
        let input = self.target.method.input();
        let value = request_json(&input, &self.mapping, body, self.variables.clone(), self.query.as_deref())
            .map_err(Status::invalid_argument)?;
        json::encode_value(&input, value).map_err(|err| invalid(&input, None, &err))
    }

    /// The requests of a client- or bidirectional-streaming call: a JSON array, or JSON
    /// values one after another.
    fn requests(&self) -> Result<Vec<Bytes>, Status> {
        let input = self.target.method.input();
        let mut values = Vec::new();
        for value in serde_json::Deserializer::from_slice(&self.body).into_iter::<Value>() {
            values.push(value.map_err(|err| bad_json(&err))?);
        }
        if let [Value::Array(_)] = values.as_slice()
            && let Some(Value::Array(items)) = values.pop()
        {
            values = items;
        }
        values
            .into_iter()
            .enumerate()
            .map(|(n, value)| {
                json::encode_value(&input, value).map_err(|err| invalid(&input, Some(n + 1), &err))
            })
            .collect()
    }

    fn to_json(&self, body: Bytes) -> Result<String, Status> {
        self.target
            .method
            .response_to_json(body, &self.json)
            .map_err(|err| Status::internal(format!("the response does not decode: {err}")))
    }
}

fn bad_json(err: &serde_json::Error) -> Status {
    Status::invalid_argument(format!("malformed JSON: {err}"))
}

fn invalid(
    input: &prost_reflect::MessageDescriptor,
    n: Option<usize>,
    err: &rpc_dynamic::JsonError,
) -> Status {
    let which = n.map(|n| format!("request {n}: ")).unwrap_or_default();
    Status::invalid_argument(format!("{which}invalid {}: {err}", input.full_name()))
}

/// The metadata a call goes on with: the caller's, with the trace continued from the
/// gateway's span.
fn onward(ctx: &ServerContext) -> Metadata {
    let mut metadata = ctx.metadata().clone();
    if let Some(current) = TraceContext::current() {
        metadata.insert("traceparent", current.child().to_string());
    }
    metadata
}

/// A unary or client-streaming call: one response, as JSON.
async fn unary(inner: &Inner, ctx: ServerContext, call: Call) -> Response {
    let call = Arc::new(call);
    let forward = Arc::clone(&call);
    let (ctx, result) = inner
        .chain
        .run(ctx, move |mut ctx| async move {
            let result = forward_one(&mut ctx, &forward).await;
            (ctx, result)
        })
        .await;
    let result = result.and_then(|body| call.to_json(body));
    let mut response = match result {
        Ok(json) => {
            let mut response = json.into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(status) => error_response(&status),
    };
    answer_headers(&ctx, response.headers_mut());
    response
}

async fn forward_one(ctx: &mut ServerContext, call: &Call) -> Result<Bytes, Status> {
    let target = &call.target;
    let metadata = onward(ctx);
    let timeout = ctx.remaining();
    let path = target.method.path().clone();
    let (metadata, body) = if target.method.kind() == MethodKind::Unary {
        let request = call.request()?;
        let mut unary =
            target.channel.unary::<Bytes, Bytes, BytesCodec>(path, request).with_metadata(metadata);
        if let Some(timeout) = timeout {
            unary = unary.timeout(timeout);
        }
        unary.full().await?.into_parts()
    } else {
        let requests = call.requests()?;
        let mut open =
            target.channel.client_streaming::<Bytes, Bytes, BytesCodec>(path).with_metadata(metadata);
        if let Some(timeout) = timeout {
            open = open.timeout(timeout);
        }
        let (mut sender, mut response) = open.await?;
        let send = async move {
            // A refused send means the call ended: its status comes with the response.
            if sender.send_all(requests).await.is_ok() {
                sender.close();
            }
        };
        let (_, answer) = tokio::join!(send, &mut response);
        (response.trailers().clone(), answer?)
    };
    for (key, value) in metadata.iter() {
        ctx.response_metadata_mut().append(key.clone(), value.clone());
    }
    Ok(body)
}

/// Response metadata as `grpc-metadata-*` headers, and the gateway's `traceparent`.
fn answer_headers(ctx: &ServerContext, headers: &mut HeaderMap) {
    for (key, value) in ctx.response_metadata().iter() {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(format!("{METADATA_PREFIX}{}", key.as_str())),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    if let Some(trace) = ctx.extensions().get::<TraceContext>()
        && let Ok(value) = HeaderValue::try_from(trace.to_string())
    {
        headers.insert("traceparent", value);
    }
}

/// How a stream of responses is written: newline-delimited JSON or server-sent events.
#[derive(Clone, Copy)]
enum Framing {
    Lines,
    Events,
}

impl Framing {
    fn message(self, json: &str) -> Bytes {
        match self {
            Framing::Lines => Bytes::from(format!("{json}\n")),
            Framing::Events => Bytes::from(format!("data: {json}\n\n")),
        }
    }

    fn error(self, status: &Status) -> Bytes {
        match self {
            Framing::Lines => {
                Bytes::from(format!("{}\n", serde_json::json!({ "error": error_json(status) })))
            }
            Framing::Events => Bytes::from(format!("event: error\ndata: {}\n\n", error_json(status))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Framing::Lines => "application/x-ndjson",
            Framing::Events => "text/event-stream",
        }
    }
}

/// A server- or bidirectional-streaming call: responses streamed as they come. The answer's
/// head waits for the first response (or the end), so that a call that fails at once gets
/// its HTTP status.
async fn streaming(inner: &Inner, ctx: ServerContext, call: Call, events: bool) -> Response {
    let framing = if events { Framing::Events } else { Framing::Lines };
    let call = Arc::new(call);
    let (sender, mut messages) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let chain = inner.chain.clone();
    let forward = Arc::clone(&call);
    let task = tokio::spawn(async move {
        chain
            .run(ctx, move |ctx| async move {
                let result = forward_stream(&ctx, &forward, sender).await;
                (ctx, result)
            })
            .await
    });
    let first = messages.recv().await;
    let mut outcome = Outcome::Running(task);
    if first.is_none() {
        // Ended before any response: answer with its outcome as a whole.
        let (ctx, result) = outcome.finish().await;
        if let Err(status) = result {
            let mut response = error_response(&status);
            if let Some(ctx) = ctx {
                answer_headers(&ctx, response.headers_mut());
            }
            return response;
        }
        outcome = Outcome::Done;
    }
    let to_json = move |body: Bytes| call.to_json(body);
    let stream = futures_util::stream::unfold(
        (first, messages, outcome, to_json),
        move |(next, mut messages, outcome, to_json)| async move {
            let (chunk, outcome) = match next {
                Some(body) => match to_json(body) {
                    Ok(json) => (framing.message(&json), outcome),
                    Err(status) => (framing.error(&status), Outcome::Done),
                },
                None => match outcome.finish().await {
                    (_, Ok(())) => return None,
                    (_, Err(status)) => (framing.error(&status), Outcome::Done),
                },
            };
            let next = match outcome {
                Outcome::Running(_) => messages.recv().await,
                Outcome::Done => None,
            };
            Some((Ok::<_, std::convert::Infallible>(chunk), (next, messages, outcome, to_json)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(framing.content_type()));
    response
}

/// A streaming call's task: under way, or its outcome already taken.
enum Outcome {
    Running(tokio::task::JoinHandle<(ServerContext, Result<(), Status>)>),
    Done,
}

impl Outcome {
    /// The call's context and outcome, once it has ended (`Ok` if already taken).
    async fn finish(self) -> (Option<ServerContext>, Result<(), Status>) {
        match self {
            Outcome::Running(task) => match task.await {
                Ok((ctx, result)) => (Some(ctx), result),
                Err(err) => (None, Err(Status::internal(format!("the call failed: {err}")))),
            },
            Outcome::Done => (None, Ok(())),
        }
    }
}

async fn forward_stream(ctx: &ServerContext, call: &Call, out: mpsc::Sender<Bytes>) -> Result<(), Status> {
    let target = &call.target;
    let metadata = onward(ctx);
    let timeout = ctx.remaining();
    let path = target.method.path().clone();
    let gone = || Status::cancelled("the HTTP client went away");
    if target.method.kind() == MethodKind::ServerStreaming {
        let request = call.request()?;
        let mut open = target
            .channel
            .server_streaming::<Bytes, Bytes, BytesCodec>(path, request)
            .with_metadata(metadata);
        if let Some(timeout) = timeout {
            open = open.timeout(timeout);
        }
        let mut responses = open.await?;
        while let Some(body) = responses.message().await? {
            out.send(body).await.map_err(|_| gone())?;
        }
        return Ok(());
    }
    let requests = call.requests()?;
    let mut open = target.channel.bidi_streaming::<Bytes, Bytes, BytesCodec>(path).with_metadata(metadata);
    if let Some(timeout) = timeout {
        open = open.timeout(timeout);
    }
    let (mut sender, mut responses) = open.await?;
    let send = async move {
        if sender.send_all(requests).await.is_ok() {
            sender.close();
        }
    };
    let receive = async {
        while let Some(body) = responses.message().await? {
            out.send(body).await.map_err(|_| gone())?;
        }
        Ok(())
    };
    let ((), received) = tokio::join!(send, receive);
    received
}
