//! The client: a [`Channel`] to one server address, shared by any number of callers.
//!
//! A channel is one TCP connection carrying every call made through it, multiplexed by
//! call id and answered in any order. Cloning it is cheap (an `Arc`), and every clone uses
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

        /// The largest response frame accepted (default 4 MiB; at most 1 GiB); announced to the
        /// server, which answers `ResourceExhausted` rather than send a larger one.
        pub fn max_frame_size(mut self, bytes: usize) -> Self {
            self.config.max_frame_size = bytes.min($crate::wire::MAX_FRAME_SIZE_CAP);
            self
        }

        /// The largest response header accepted (default 16 KiB): it bounds the response
        /// metadata. Announced to the server, which answers `ResourceExhausted` rather than send
        /// a larger one.
        pub fn max_header_size(mut self, bytes: usize) -> Self {
            self.config.max_header_size = bytes;
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
    };
}

mod balanced;
mod call;
mod connection;
mod streaming;
mod task;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use balanced::BalancedBuilder;
pub use call::{MessageFuture, Response, ResponseFuture, UnaryCall};
pub use streaming::{BidiStreaming, ClientStreaming, OpenFuture, ServerStreaming, StreamingCall};

use bytes::Bytes;

use crate::balance::{Balancer, InstanceState};
use crate::codec::Codec;
use crate::discovery::{AnyRegistry, Registry};
use crate::interceptor::{ClientChain, DynClientInterceptor};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::stream::flow::FlowConfig;
use crate::stream::{DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW};
use crate::wire::{DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_SIZE, Frame, FrameKind};
pub(crate) use connection::Answer;
use connection::Request;
use task::ChannelTask;
pub(crate) use task::Command;

/// The default time allowed to establish a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default idle time after which the client pings the server.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The default time a keepalive ping may go unanswered before the connection is dropped.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default delay before the first reconnection attempt after a failed connect.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);

/// The default cap on the reconnection delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A channel's limits and options.
#[derive(Debug, Clone)]
pub(crate) struct ChannelConfig {
    pub(crate) connect_timeout: Duration,
    pub(crate) default_timeout: Option<Duration>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) max_frame_size: usize,
    pub(crate) max_header_size: usize,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) stream_window: u64,
    pub(crate) connection_window: u64,
}

impl ChannelConfig {
    pub(crate) fn flow(&self) -> FlowConfig {
        FlowConfig {
            stream_window: self.stream_window,
            connection_window: self.connection_window,
            max_frame_size: self.max_frame_size,
        }
    }
}

impl Default for ChannelConfig {
    fn default() -> Self {
        ChannelConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            default_timeout: None,
            tcp_nodelay: true,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
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
enum Route {
    /// To one server, through one connection task.
    Direct(Endpoint),
    /// To the instances of a service, each through its own channel.
    Balanced(Arc<Balancer>),
}

/// The handle to one connection task: commands go in, and call ids are drawn here.
pub(crate) struct Endpoint {
    tx: mpsc::UnboundedSender<Command>,
    next_call_id: AtomicU64,
    /// Whether the task has a connection up that accepts calls.
    established: Arc<AtomicBool>,
}

impl Endpoint {
    /// Starts the connection task for `target`; it connects on the first call.
    fn spawn(target: &Arc<str>, config: &Arc<ChannelConfig>) -> Endpoint {
        let (tx, rx) = mpsc::unbounded_channel();
        let established = Arc::new(AtomicBool::new(false));
        tokio::spawn(ChannelTask::new(rx, Arc::clone(target), Arc::clone(config), Arc::clone(&established)));
        Endpoint { tx, next_call_id: AtomicU64::new(1), established }
    }

    /// Whether a connection is up: calls sent now go straight out.
    pub(crate) fn is_established(&self) -> bool {
        self.established.load(Ordering::Relaxed)
    }

    pub(crate) fn next_call_id(&self) -> u64 {
        // Ids are unique for the endpoint's life, so they never repeat on any connection.
        self.next_call_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn send_call(
        &self,
        request: Request,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<oneshot::Receiver<Result<Answer, Status>>, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Call { request, reply, deadline })
            .map_err(|_| Status::unavailable("the channel's connection task has stopped"))?;
        Ok(rx)
    }

    pub(crate) fn cancel(&self, id: u64) {
        let _ = self.tx.send(Command::Cancel { id });
    }

    pub(crate) fn sender(&self) -> &mpsc::UnboundedSender<Command> {
        &self.tx
    }

    /// Waits until the connection is established, or has failed.
    async fn ready(&self) -> Result<(), Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::WaitReady { reply })
            .map_err(|_| Status::unavailable("the channel's connection task has stopped"))?;
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(Status::unavailable("the channel's connection task has stopped")),
        }
    }

    /// The frame that opens a stream to `method`, with a fresh call id.
    pub(crate) fn opening_frame(&self, method: &'static str, metadata: Metadata) -> Box<Frame> {
        let mut frame = Box::new(Frame::new(FrameKind::StreamOpen, self.next_call_id()));
        frame.header.method = Some(Bytes::from_static(method.as_bytes()));
        frame.header.metadata = metadata;
        frame
    }

    /// A unary call to `method` with a fresh call id.
    pub(crate) fn request(&self, method: &'static str, metadata: Metadata, body: Bytes) -> Request {
        Request { id: self.next_call_id(), method, metadata, body }
    }
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
#[derive(Debug, Default)]
struct CallOptions {
    timeout: Option<Duration>,
    metadata: Metadata,
}

impl Channel {
    /// A call's deadline: from its timeout, or the channel's default.
    fn deadline_for(&self, options: &CallOptions) -> Option<tokio::time::Instant> {
        let timeout = options.timeout.or(self.shared.config.default_timeout);
        timeout.and_then(|t| tokio::time::Instant::now().checked_add(t))
    }

    /// Connects to `target` (`host:port`) with default options, failing if it cannot.
    pub async fn connect(target: impl ToString) -> Result<Channel, Status> {
        Channel::builder(target).connect().await
    }

    /// A builder for a channel to `target` (`host:port`, resolved at each connect).
    pub fn builder(target: impl ToString) -> ChannelBuilder {
        ChannelBuilder {
            target: target.to_string(),
            config: ChannelConfig::default(),
            chain: ClientChain::new(),
        }
    }

    /// The address this channel connects to.
    pub fn target(&self) -> &str {
        &self.shared.target
    }

    /// Starts a unary call to `method` (a full name, `/package.Service/Method`). Generated
    /// clients call this; it is public for hand-written ones.
    pub fn unary<Req, Resp, C>(&self, method: &'static str, request: Req) -> UnaryCall<'_, Req, Resp, C>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        UnaryCall::new(self, method, request)
    }

    /// Starts a server-streaming call to `method`. Generated clients call this.
    pub fn server_streaming<Req, Resp, C>(
        &self,
        method: &'static str,
        request: Req,
    ) -> StreamingCall<'_, Req, Resp, C, ServerStreaming>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        StreamingCall::new(self, method, Some(request))
    }

    /// Starts a client-streaming call to `method`. Generated clients call this.
    pub fn client_streaming<Req, Resp, C>(
        &self,
        method: &'static str,
    ) -> StreamingCall<'_, Req, Resp, C, ClientStreaming>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        StreamingCall::new(self, method, None)
    }

    /// Starts a bidirectional-streaming call to `method`. Generated clients call this.
    pub fn bidi_streaming<Req, Resp, C>(
        &self,
        method: &'static str,
    ) -> StreamingCall<'_, Req, Resp, C, BidiStreaming>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        StreamingCall::new(self, method, None)
    }

    /// A channel to the instances of `service`, found in `registry`: each call goes to the
    /// instance a [`Policy`](crate::balance::Policy) picks, failing instances are ejected
    /// and probed back, and a failed call is sent to another instance when that is safe. See
    /// [`balance`](crate::balance).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rpc_core::Channel;
    /// use rpc_core::balance::Policy;
    /// use rpc_core::discovery::MemoryRegistry;
    ///
    /// # async fn run(registry: MemoryRegistry) -> Result<(), rpc_core::Status> {
    /// let channel = Channel::balanced(registry, "acme.users.v1.Users")
    ///     .policy(Policy::PowerOfTwoChoices)
    ///     .idempotent("/acme.users.v1.Users/GetUser")
    ///     .timeout(Duration::from_secs(2))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn balanced(registry: impl Registry, service: impl Into<String>) -> BalancedBuilder {
        BalancedBuilder::new(AnyRegistry::new(registry), service.into())
    }

    /// A direct channel to `target` with no interceptors, connecting on its first call.
    pub(crate) fn direct(target: &str, config: Arc<ChannelConfig>) -> Channel {
        let target: Arc<str> = target.into();
        let endpoint = Endpoint::spawn(&target, &config);
        Channel {
            shared: Arc::new(Shared { route: Route::Direct(endpoint), target, config, interceptors: None }),
        }
    }

    /// What a balanced channel knows of the service's instances now (an empty list for a
    /// direct channel): their registrations, calls in flight, ejections and health.
    pub fn instances(&self) -> Vec<InstanceState> {
        match &self.shared.route {
            Route::Direct(_) => Vec::new(),
            Route::Balanced(balancer) => balancer.instances(),
        }
    }

    /// The connection task of a direct channel; `None` for a balanced one.
    pub(crate) fn endpoint(&self) -> Option<&Endpoint> {
        match &self.shared.route {
            Route::Direct(endpoint) => Some(endpoint),
            Route::Balanced(_) => None,
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
    /// speak the protocol. Must be called inside a Tokio runtime.
    pub async fn connect(self) -> Result<Channel, Status> {
        let channel = self.connect_lazy();
        if let Some(endpoint) = channel.endpoint() {
            endpoint.ready().await?;
        }
        Ok(channel)
    }

    /// A channel that connects on its first call. Must be called inside a Tokio runtime.
    pub fn connect_lazy(self) -> Channel {
        let target: Arc<str> = self.target.into();
        let config = Arc::new(self.config);
        let endpoint = Endpoint::spawn(&target, &config);
        let interceptors = (!self.chain.is_empty()).then(|| self.chain.interceptors.into());
        Channel { shared: Arc::new(Shared { route: Route::Direct(endpoint), target, config, interceptors }) }
    }
}
