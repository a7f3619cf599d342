//! The client: a [`Channel`] to one server address, shared by any number of callers.
//!
//! A channel is one connection (TCP, or a Unix socket for `unix:/path` targets) carrying
//! every call made through it, multiplexed by call id and answered in any order. Cloning it is cheap (an `Arc`), and every clone uses
//! the same connection. It connects on first use (or up front with
//! [`ChannelBuilder::connect`]), reconnects after the connection drops, and fails the calls
//! that were in flight on a dead connection with `Unavailable`.
//!
//! ```no_run
//! use std::time::Duration;
//! use rpc_core::client::Channel;
//!
//! # async fn run() -> Result<(), rpc_core::Status> {
//! let channel = Channel::builder("127.0.0.1:50051")
//!     .timeout(Duration::from_secs(2))       // default per-call timeout
//!     .connect_timeout(Duration::from_secs(1))
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```

/// The builder methods every kind of call has: a timeout (documented per kind) and metadata.
/// Used inside an `impl` of a type with an `options: CallOptions` field.
macro_rules! call_option_methods {
    ($timeout_doc:literal) => {
        #[doc = $timeout_doc]
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options.timeout = Some(timeout);
            self
        }

        /// Adds a metadata entry to the call.
        ///
        /// # Panics
        /// If `key` is a `&'static str` that is not a valid key (see
        /// [`MetadataKey`](crate::metadata::MetadataKey)).
        pub fn metadata(
            mut self,
            key: impl Into<crate::metadata::MetadataKey>,
            value: impl Into<bytes::Bytes>,
        ) -> Self {
            self.options.metadata.append(key, value);
            self
        }

        /// Adds every entry of `metadata` to the call.
        pub fn with_metadata(mut self, metadata: crate::metadata::Metadata) -> Self {
            self.options.metadata.extend(metadata);
            self
        }

        /// Adds an interceptor for this call alone, inside those of the channel (see
        /// [`interceptor`](crate::interceptor)).
        pub fn interceptor(mut self, interceptor: impl crate::interceptor::ClientInterceptor) -> Self {
            self.options.interceptors.push(std::sync::Arc::new(interceptor));
            self
        }
    };
}

/// The options every channel has, direct or balanced: limits, timeouts, keepalive,
/// reconnection, flow control and interceptors. Used inside the `impl` of a builder with
/// `config: ChannelConfig` and `chain: ClientChain` fields.
macro_rules! channel_option_methods {
    () => {
        /// The time allowed to establish a connection: the TCP connect, then the server's
        /// preface (default 10 s).
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.connect_timeout = timeout;
            self
        }

        /// A timeout for calls that set none themselves (default: none).
        pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.default_timeout = Some(timeout);
            self
        }

        /// Sets `TCP_NODELAY` (default on).
        pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
            self.config.tcp_nodelay = enabled;
            self
        }

        /// Sets `SO_KEEPALIVE` with the idle time before the kernel's first probe (default
        /// 60 s); `None` turns it off.
        pub fn tcp_keepalive(mut self, idle: Option<std::time::Duration>) -> Self {
            self.config.tcp_keepalive = idle;
            self
        }

        /// Makes connections with `connector` instead of dialing TCP or Unix addresses: an
        /// [in-memory pipe](crate::transport::memory), a tunnel, a wrapped stream.
        pub fn connector(mut self, connector: impl $crate::transport::Connector) -> Self {
            self.config.connector = std::sync::Arc::new(connector);
            self.config.connector_is_default = false;
            self
        }

        /// Speaks TLS to the server (feature `tls`), over TCP, a Unix socket, or the
        /// [`connector`](Self::connector) set: checks the server's certificate against the
        /// configured CAs and name, and with an
        /// [`identity`](crate::transport::tls::ClientTlsConfig::identity) presents a client
        /// certificate for mutual TLS. The handshake counts against the
        /// [connect timeout](Self::connect_timeout). Fails if the configuration does (no
        /// trusted CA, a key that does not match its certificate).
        #[cfg(feature = "tls")]
        pub fn tls_config(
            self,
            config: $crate::transport::tls::ClientTlsConfig,
        ) -> Result<Self, $crate::transport::tls::TlsError> {
            Ok(self.tls(config.build()?))
        }

        /// Speaks TLS with a connector made beforehand (with
        /// [`ClientTlsConfig::build`](crate::transport::tls::ClientTlsConfig::build), or from a
        /// `rustls` configuration of your own); see [`tls_config`](Self::tls_config). Its own
        /// inner connector is replaced by the channel's. Keep a clone of the connector to
        /// rotate the client's identity and CAs without a restart
        /// ([`TlsConnector::reload`](crate::transport::tls::TlsConnector::reload)).
        #[cfg(feature = "tls")]
        pub fn tls(mut self, connector: $crate::transport::tls::TlsConnector) -> Self {
            self.config.tls = Some(connector);
            self
        }

        /// The largest response frame accepted (default 4 MiB; at least 16 KiB, at most 1 GiB); announced to the
        /// server, which answers `ResourceExhausted` rather than send a larger one.
        pub fn max_frame_size(mut self, bytes: usize) -> Self {
            self.config.max_frame_size =
                bytes.clamp($crate::wire::MIN_MAX_FRAME_SIZE, $crate::wire::MAX_FRAME_SIZE_CAP);
            self
        }

        /// The largest response header accepted (default 16 KiB; at least 1 KiB): it bounds the response
        /// metadata. Announced to the server, which answers `ResourceExhausted` rather than send
        /// a larger one.
        pub fn max_header_size(mut self, bytes: usize) -> Self {
            self.config.max_header_size = bytes.max($crate::wire::MIN_MAX_HEADER_SIZE);
            self
        }

        /// Pings the server after this much silence (default 30 s); `None` turns keepalive off.
        pub fn keepalive_interval(mut self, interval: Option<std::time::Duration>) -> Self {
            self.config.keepalive_interval = interval;
            self
        }

        /// How long a keepalive ping may go unanswered before the connection is declared dead
        /// and its calls fail with `Unavailable` (default 10 s).
        pub fn keepalive_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.config.keepalive_timeout = timeout;
            self
        }

        /// Closes the connection after this long with no call in flight and none started
        /// (default: never); the next call opens a new one. Keepalive pings do not count as
        /// calls.
        pub fn idle_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.config.timeouts.idle = timeout;
            self
        }

        /// How long the server may take to finish a frame it has begun to send (default 30 s;
        /// `None`: no limit). A server that stops in the middle of a frame is disconnected, and
        /// the calls on the connection fail with `Unavailable`.
        pub fn read_stall_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.config.timeouts.read_stall = timeout;
            self
        }

        /// How long the server may go without reading anything of what the client has for it
        /// (default 30 s; `None`: no limit). Then the connection is closed, and its calls fail
        /// with `Unavailable`.
        pub fn write_stall_timeout(mut self, timeout: Option<std::time::Duration>) -> Self {
            self.config.timeouts.write_stall = timeout;
            self
        }

        /// Delays between failed connection attempts: `initial`, doubling up to `max`, with
        /// jitter (defaults 100 ms and 5 s). While waiting, calls fail fast with `Unavailable`.
        pub fn reconnect_backoff(mut self, initial: std::time::Duration, max: std::time::Duration) -> Self {
            self.config.backoff_initial = initial;
            self.config.backoff_max = max.max(initial);
            self
        }

        /// The flow-control window granted to the server for each stream it sends on: how many
        /// bytes of its messages may be in flight or waiting to be read (default 1 MiB; at least
        /// 64 KiB). It is also the budget of bytes a [`StreamSender`](crate::StreamSender) may
        /// queue ahead of the socket.
        pub fn stream_window(mut self, bytes: u64) -> Self {
            self.config.stream_window = bytes.max($crate::wire::MIN_STREAM_WINDOW);
            self
        }

        /// The flow-control window granted to the server for all streams of one connection
        /// together (default 16 MiB; at least 1 MiB).
        pub fn connection_window(mut self, bytes: u64) -> Self {
            self.config.connection_window = bytes.max($crate::wire::MIN_CONNECTION_WINDOW);
            self
        }

        /// Adds an interceptor that every call through the channel runs through, inside those
        /// added before it. See [`interceptor`](crate::interceptor).
        pub fn interceptor(mut self, interceptor: impl $crate::interceptor::ClientInterceptor) -> Self {
            self.chain = self.chain.with(interceptor);
            self
        }

        /// Adds the interceptors of `chain`, in its order, inside those added before.
        pub fn interceptors(mut self, chain: $crate::interceptor::ClientChain) -> Self {
            self.chain = self.chain.then(chain);
            self
        }
    };
}

pub(crate) use channel_option_methods;

mod call;
mod conn;
mod endpoint;
mod router;
mod streaming;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use call::{MessageFuture, Response, ResponseFuture, UnaryCall};
pub use streaming::{BidiStreaming, ClientStreaming, OpenFuture, ServerStreaming, StreamingCall};

pub(crate) use conn::ClientConn;
pub(crate) use endpoint::Endpoint;
pub(crate) use router::{InFlight, Node, Router};

use crate::codec::Codec;
use crate::conn::Timeouts;
use crate::interceptor::{ClientChain, ClientInterceptor, DynClientInterceptor};
use crate::metadata::Metadata;
use crate::method::MethodName;
use crate::status::Status;
use crate::stream::{DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW};
use crate::transport::{Connector, DefaultConnector};
use crate::wire::{DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_SIZE};

/// The default time allowed to establish a connection: the connect, then the server's preface.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default idle time after which the client pings the server.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The default time a keepalive ping may go unanswered before the connection is dropped.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time the server may take to finish a frame it has begun to send.
pub const DEFAULT_READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time the server may go without reading what the client sends.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default delay before the first reconnection attempt after a failed connect.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// The default cap on the reconnection delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A channel's limits and options.
#[derive(Clone)]
pub(crate) struct ChannelConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) max_frame_size: usize,
    pub(crate) max_header_size: usize,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) timeouts: Timeouts,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) stream_window: u64,
    pub(crate) connection_window: u64,
    /// How connections are made: by default, TCP and Unix sockets.
    pub(crate) connector: Arc<dyn Connector>,
    pub(crate) connector_is_default: bool,
    /// TLS over the connector's streams, when set.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::transport::tls::TlsConnector>,
}

impl fmt::Debug for ChannelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelConfig")
            .field("connect_timeout", &self.connect_timeout)
            .field("default_timeout", &self.default_timeout)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("max_frame_size", &self.max_frame_size)
            .field("max_header_size", &self.max_header_size)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("timeouts", &self.timeouts)
            .field("stream_window", &self.stream_window)
            .field("connection_window", &self.connection_window)
            .field("tls", &self.tls_enabled())
            .finish_non_exhaustive()
    }
}

impl ChannelConfig {
    /// The config without TLS, its connector's options applied.
    pub(crate) fn without_tls(&self) -> ChannelConfig {
        #[cfg(feature = "tls")]
        return ChannelConfig { tls: None, ..self.clone() }.with_connector_options();
        #[cfg(not(feature = "tls"))]
        self.clone().with_connector_options()
    }

    fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            default_timeout: None,
            tcp_nodelay: true,
            tcp_keepalive: Some(crate::transport::DEFAULT_TCP_KEEPALIVE),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            timeouts: Timeouts {
                idle: None,
                read_stall: Some(DEFAULT_READ_STALL_TIMEOUT),
                write_stall: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            },
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
            connector: Arc::new(DefaultConnector::new()),
            connector_is_default: true,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// A multiplexed connection to one server, or a balanced set of connections to the
/// instances of a service; see the [module docs](self).
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
}

struct Shared {
    route: Route,
    /// The address (or, for a balanced channel, the service name) the channel calls.
    target: Arc<str>,
    config: Arc<ChannelConfig>,
    /// The channel's interceptors; `None` when there are none, so calls skip the mechanism.
    interceptors: Option<Arc<[Arc<dyn DynClientInterceptor>]>>,
}

/// Where a channel's calls go.
#[derive(Clone)]
enum Route {
    /// To one server.
    Direct(Endpoint),
    /// To the instance a router picks for each call.
    Balanced(Arc<dyn Router>),
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.shared.route {
            Route::Direct(_) => "direct",
            Route::Balanced(_) => "balanced",
        };
        f.debug_struct("Channel")
            .field("target", &self.shared.target)
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// What a caller sets on one call, whatever its kind.
#[derive(Default)]
struct CallOptions {
    timeout: Option<Duration>,
    metadata: Metadata,
    /// The call's own interceptors, inside the channel's.
    interceptors: Vec<Arc<dyn DynClientInterceptor>>,
}

impl fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("metadata", &self.metadata)
            .field("interceptors", &self.interceptors.len())
            .finish()
    }
}

impl Channel {
    /// A call's deadline: from its timeout, or the channel's default.
    fn deadline_for(&self, timeout: Option<Duration>) -> Option<tokio::time::Instant> {
        let timeout = timeout.or(self.shared.config.default_timeout);
        timeout.and_then(|t| tokio::time::Instant::now().checked_add(t))
    }

    /// The interceptors a call runs through: the channel's, then the call's own; `None` when
    /// there are none, so the call skips the mechanism.
    fn chain_for(
        &self,
        call: Vec<Arc<dyn DynClientInterceptor>>,
    ) -> Option<Arc<[Arc<dyn DynClientInterceptor>]>> {
        match (&self.shared.interceptors, call.is_empty()) {
            (None, true) => None,
            (Some(channel), true) => Some(Arc::clone(channel)),
            (channel, false) => {
                Some(channel.iter().flat_map(|chain| chain.iter()).cloned().chain(call).collect())
            }
        }
    }

    /// A channel over the same connection (or balanced set) whose calls also run through
    /// `interceptor`, inside this channel's: give it to one client, and that client's calls
    /// are intercepted while the others' on the connection are not.
    ///
    /// ```no_run
    /// use rpc_core::Channel;
    /// use rpc_core::middleware::BearerToken;
    ///
    /// # async fn run() -> Result<(), rpc_core::Status> {
    /// let channel = Channel::connect("127.0.0.1:50051").await?;
    /// // One connection; the admin client's calls carry a token, the others' do not.
    /// let admin = channel.with_interceptor(BearerToken::new("admin-token"));
    /// # Ok(()) }
    /// ```
    pub fn with_interceptor(&self, interceptor: impl ClientInterceptor) -> Channel {
        self.with_interceptors(ClientChain::new().with(interceptor))
    }

    /// A channel over the same connection whose calls also run through `chain`, inside this
    /// channel's interceptors; see [`with_interceptor`](Channel::with_interceptor).
    pub fn with_interceptors(&self, chain: ClientChain) -> Channel {
        let shared = &self.shared;
        let all = ClientChain {
            interceptors: shared.interceptors.iter().flat_map(|c| c.iter()).cloned().collect(),
        };
        let interceptors = all.then(chain).into_shared();
        Channel {
            shared: Arc::new(Shared {
                route: shared.route.clone(),
                target: Arc::clone(&shared.target),
                config: Arc::clone(&shared.config),
                interceptors,
            }),
        }
    }

    /// Connects to `target` (`host:port`, or `unix:/path`) with default options, failing if
    /// it cannot.
    pub async fn connect(target: impl ToString) -> Result<Channel, Status> {
        Channel::builder(target).connect().await
    }

    /// A builder for a channel to `target`: `host:port` (resolved at each connect), or
    /// `unix:/path` for a Unix socket.
    pub fn builder(target: impl ToString) -> ChannelBuilder {
        ChannelBuilder {
            target: target.to_string(),
            config: ChannelConfig::default(),
            chain: ClientChain::new(),
        }
    }

    /// The address this channel connects to (for a balanced channel, the service's name).
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Starts a unary call to `method` (a full name, `/package.Service/Method`). Generated
    /// clients call this with a `&'static str`; it is public for hand-written ones, which may
    /// also name a method at run time (see [`MethodName`]) and, with
    /// [`BytesCodec`](crate::codec::BytesCodec), send bodies encoded elsewhere:
    ///
    /// ```no_run
    /// use bytes::Bytes;
    /// use rpc_core::codec::BytesCodec;
    /// use rpc_core::method::MethodName;
    ///
    /// # async fn run(channel: rpc_core::Channel, service: &str) -> Result<(), rpc_core::Status> {
    /// let method = MethodName::from(format!("/{service}/GetFeature"));
    /// let body = Bytes::from_static(&[0x08, 0x01]); // a protobuf-encoded request
    /// let answer: Bytes = channel.unary::<_, _, BytesCodec>(&method, body).await?;
    /// # Ok(()) }
    /// ```
    pub fn unary<Req, Resp, C>(
        &self,
        method: impl Into<MethodName>,
        request: Req,
    ) -> UnaryCall<'_, Req, Resp, C>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        UnaryCall::new(self, method.into(), request)
    }

    /// Starts a server-streaming call to `method`. Generated clients call this.
    pub fn server_streaming<Req, Resp, C>(
        &self,
        method: impl Into<MethodName>,
        request: Req,
    ) -> StreamingCall<'_, Req, Resp, C, ServerStreaming>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        StreamingCall::new(self, method.into(), Some(request))
    }

    /// Starts a client-streaming call to `method`. Generated clients call this.
    pub fn client_streaming<Req, Resp, C>(
        &self,
        method: impl Into<MethodName>,
    ) -> StreamingCall<'_, Req, Resp, C, ClientStreaming>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        StreamingCall::new(self, method.into(), None)
    }

    /// Starts a bidirectional-streaming call to `method`. Generated clients call this.
    pub fn bidi_streaming<Req, Resp, C>(
        &self,
        method: impl Into<MethodName>,
    ) -> StreamingCall<'_, Req, Resp, C, BidiStreaming>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        StreamingCall::new(self, method.into(), None)
    }

    /// A channel with no interceptors over `endpoint` (a balanced channel's instance).
    pub(crate) fn on_endpoint(endpoint: Endpoint, config: Arc<ChannelConfig>) -> Channel {
        let target = Arc::clone(endpoint.target());
        Channel {
            shared: Arc::new(Shared { route: Route::Direct(endpoint), target, config, interceptors: None }),
        }
    }

    /// A channel whose calls go where `router` says, through `chain`.
    pub(crate) fn routed(
        router: Arc<dyn Router>,
        target: Arc<str>,
        config: Arc<ChannelConfig>,
        chain: ClientChain,
    ) -> Channel {
        let interceptors = chain.into_shared();
        Channel { shared: Arc::new(Shared { route: Route::Balanced(router), target, config, interceptors }) }
    }

    /// The router of a balanced channel; `None` for a direct one.
    pub(crate) fn router(&self) -> Option<&Arc<dyn Router>> {
        match &self.shared.route {
            Route::Direct(_) => None,
            Route::Balanced(router) => Some(router),
        }
    }
}

/// Options for a [`Channel`]. Every limit has a default, named by a constant in this module.
#[derive(Debug, Clone)]
pub struct ChannelBuilder {
    target: String,
    config: ChannelConfig,
    chain: ClientChain,
}

impl ChannelBuilder {
    channel_option_methods!();

    /// Connects now; fails with `Unavailable` if the server cannot be reached or does not
    /// speak the protocol, and with `InvalidArgument` if the target is not an address. Must
    /// be called inside a Tokio runtime.
    pub async fn connect(self) -> Result<Channel, Status> {
        let channel = self.connect_lazy();
        if let Route::Direct(endpoint) = &channel.shared.route {
            endpoint.established().await?;
        }
        Ok(channel)
    }

    /// A channel that connects on its first call. Must be called inside a Tokio runtime.
    pub fn connect_lazy(self) -> Channel {
        let config = Arc::new(self.config.with_connector_options());
        let endpoint = Endpoint::new(&self.target, Arc::clone(&config));
        let target = Arc::clone(endpoint.target());
        let interceptors = self.chain.into_shared();
        Channel { shared: Arc::new(Shared { route: Route::Direct(endpoint), target, config, interceptors }) }
    }
}

impl ChannelConfig {
    /// The config with the default connector's options applied (unless a connector of the
    /// user's replaced it), and TLS over it if asked for.
    pub(crate) fn with_connector_options(mut self) -> ChannelConfig {
        if self.connector_is_default {
            self.connector = Arc::new(
                DefaultConnector::new().tcp_nodelay(self.tcp_nodelay).tcp_keepalive(self.tcp_keepalive),
            );
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            self.connector = Arc::new(tls.clone().over_arc(self.connector));
        }
        self
    }
}
