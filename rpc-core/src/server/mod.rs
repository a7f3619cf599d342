//! The server: mount services, serve them on a TCP listener, shut down gracefully.
//!
//! ```no_run
//! use rpc_core::{ServerContext, Server, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Ping { #[prost(uint64, tag = "1")] pub n: u64 }
//!
//! #[rpc_core::service]
//! pub trait Pinger {
//!     async fn ping(&self, ctx: &mut ServerContext, req: Ping) -> Result<Ping, Status>;
//! }
//!
//! struct MyPinger;
//! impl Pinger for MyPinger {
//!     async fn ping(&self, _ctx: &mut ServerContext, req: Ping) -> Result<Ping, Status> {
//!         Ok(req)
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! // Drains on SIGTERM (`docker stop`, a Kubernetes rollout) or Ctrl-C.
//! Server::builder()
//!     .add_service(PingerServer::new(MyPinger))
//!     .serve_with_shutdown("127.0.0.1:50051", rpc_core::server::shutdown_signal())
//!     .await
//! # }
//! ```

mod conn;
mod limits;
mod registration;
pub(crate) mod routes;
#[cfg(feature = "tls")]
mod tls;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::wire::{
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_SIZE, MAX_FRAME_SIZE_CAP, MIN_MAX_FRAME_SIZE,
    MIN_MAX_HEADER_SIZE,
};
pub use registration::Registration;

/// Completes at the first SIGTERM (on Unix) or Ctrl-C (SIGINT): the signal to pass to
/// [`ServerBuilder::serve_with_shutdown`] so that a server in a container drains its calls
/// on `docker stop` or a Kubernetes rollout instead of being killed in the middle of them.
///
/// The SIGTERM handler is installed when this is called (from inside a Tokio runtime), so
/// a SIGTERM that arrives before the future is first polled is not lost. If it cannot be
/// installed, the failure is logged and only Ctrl-C is waited for.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Ok(mut terminate) => {
                    terminate.recv().await;
                    tracing::info!("SIGTERM: shutting down");
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C shuts down");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        let interrupt = async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("Ctrl-C: shutting down"),
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for Ctrl-C");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            () = terminate => {}
            () = interrupt => {}
        }
    }
}

use crate::codegen::Service;
use crate::conn::InputBudget;
use crate::discovery::{AnyRegistry, Registry};
use crate::health::{HealthReporter, HealthServer, HealthService};
use crate::interceptor::{ServerChain, ServerInterceptor};
use crate::status::Status;
use crate::stream::{DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW};
use crate::transport::{self, Address, AnyListener, Listener, SocketOptions};
use crate::wire::{MIN_CONNECTION_WINDOW, MIN_STREAM_WINDOW};
use limits::PeerCounts;
use routes::Routes;

/// The default cap on calls in flight on one connection, running or with an answer not yet
/// written to the socket; past it, calls are refused with `ResourceExhausted`. With the
/// frame limit it bounds what one connection can make the server hold:
/// `max_concurrent_calls × max_frame_size`.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 1024;

/// The default time in-flight calls get to finish once shutdown starts.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The default time a new connection gets to send its preface.
pub const DEFAULT_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time a connection may go without calls before it is closed (gracefully: a
/// `GOAWAY`, then the close).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The default time a peer may take to finish a frame it has begun to send.
pub const DEFAULT_READ_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default time a peer may go without reading anything of what the server must send it.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The default silence after which the server pings a client.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// The default time a client has to answer a keepalive ping.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The default time a server-streaming call may wait for its request (the one message and
/// the client's `STREAM_END`) before its handler runs.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The default cap on connections a server holds at once; past it, it accepts no more until
/// one closes.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The default budget for received bytes a server holds for its calls, over all its
/// connections together: stream messages its handlers have not read yet, and large frames
/// being received. Past it, the connections holding the most stop being read until the
/// handlers catch up.
pub const DEFAULT_INPUT_BUDGET: usize = 512 * 1024 * 1024;

/// A pause after an accept error such as running out of file descriptors, so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The server's limits and options.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub(crate) max_frame_size: usize,
    pub(crate) max_header_size: usize,
    pub(crate) max_concurrent_calls: usize,
    pub(crate) shutdown_grace: Duration,
    pub(crate) preface_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) read_stall_timeout: Option<Duration>,
    pub(crate) write_stall_timeout: Option<Duration>,
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) tcp_nodelay: bool,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) max_connections: usize,
    pub(crate) max_connections_per_peer: Option<usize>,
    pub(crate) input_budget: usize,
    pub(crate) stream_window: u64,
    pub(crate) connection_window: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            preface_timeout: DEFAULT_PREFACE_TIMEOUT,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            read_stall_timeout: Some(DEFAULT_READ_STALL_TIMEOUT),
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            tcp_nodelay: true,
            tcp_keepalive: Some(crate::transport::DEFAULT_TCP_KEEPALIVE),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_peer: None,
            input_budget: DEFAULT_INPUT_BUDGET,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
        }
    }
}

/// Entry point: `Server::builder()`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with default limits and no services.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            routes: Routes::default(),
            config: ServerConfig::default(),
            chain: ServerChain::new(),
            health: HealthReporter::new(),
            serve_health: true,
            registration: None,
            on_serve: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// Mounts services, sets limits, and serves.
pub struct ServerBuilder {
    routes: Routes,
    config: ServerConfig,
    chain: ServerChain,
    /// The statuses of the built-in health service.
    health: HealthReporter,
    /// Whether the built-in health service is mounted.
    serve_health: bool,
    registration: Option<(AnyRegistry, Registration)>,
    /// Told the mounted services once serving starts (the reflection service learns them so).
    on_serve: Vec<OnServe>,
    /// TLS on every accepted connection, when set.
    #[cfg(feature = "tls")]
    tls: Option<crate::transport::tls::TlsAcceptor>,
}

/// What [`ServerBuilder::on_serve`] keeps.
type OnServe = Box<dyn FnOnce(&[Arc<dyn Service>]) + Send>;

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("services", &self.routes.service_names())
            .field("config", &self.config)
            .field("interceptors", &self.chain.len())
            .field("health", &self.serve_health)
            .field("registration", &self.registration.as_ref().map(|(_, r)| r))
            .field("tls", &self.tls_enabled())
            .finish()
    }
}

impl ServerBuilder {
    /// Mounts a service, such as a generated `FooServer::new(my_impl)`.
    ///
    /// # Panics
    /// If a service with the same full name is already mounted.
    pub fn add_service(mut self, service: impl Service) -> ServerBuilder {
        self.routes.add(Arc::new(service), ServerChain::new());
        self
    }

    /// Mounts a service whose calls also run through `chain`, inside the server-wide
    /// interceptors.
    ///
    /// # Panics
    /// If a service with the same full name is already mounted.
    pub fn add_service_with(mut self, service: impl Service, chain: ServerChain) -> ServerBuilder {
        self.routes.add(Arc::new(service), chain);
        self
    }

    /// Adds an interceptor that every call to every service runs through, after those added
    /// before it and before each service's own. See [`interceptor`](crate::interceptor).
    pub fn interceptor(mut self, interceptor: impl ServerInterceptor) -> ServerBuilder {
        self.chain = self.chain.with(interceptor);
        self
    }

    /// Registers the server in `registry` once it listens, and deregisters it when it shuts
    /// down, before it stops accepting calls. By default every mounted service (but the
    /// health service) is registered, at the listener's address: see [`Registration`].
    /// Serving fails if the registry cannot be reached at the start; later, the registry
    /// keeps the registration alive on its own.
    ///
    /// ```no_run
    /// use rpc_core::Server;
    /// use rpc_core::discovery::MemoryRegistry;
    /// use rpc_core::server::Registration;
    ///
    /// # async fn run(registry: MemoryRegistry) -> std::io::Result<()> {
    /// Server::builder()
    ///     // .add_service(...)
    ///     .register(registry, Registration::new().weight(50))
    ///     .serve("127.0.0.1:50051")
    ///     .await
    /// # }
    /// ```
    pub fn register(mut self, registry: impl Registry, registration: Registration) -> ServerBuilder {
        self.registration = Some((AnyRegistry::new(registry), registration));
        self
    }

    /// Calls `hook` with every mounted service (the built-in health service included) when
    /// serving starts, before the first connection is accepted.
    pub(crate) fn on_serve(
        mut self,
        hook: impl FnOnce(&[Arc<dyn Service>]) + Send + 'static,
    ) -> ServerBuilder {
        self.on_serve.push(Box::new(hook));
        self
    }

    /// The statuses the server's built-in [health service](crate::health) reports: every
    /// mounted service is `SERVING` once the server listens (unless given another status
    /// before), and `NOT_SERVING` once it shuts down. Set a status with the reporter at any
    /// time. (After [`without_health`](Self::without_health) nobody can ask for them.)
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Does not mount the built-in health service.
    pub fn without_health(mut self) -> ServerBuilder {
        self.serve_health = false;
        self
    }

    /// The largest frame accepted from a client (default 4 MiB, [`DEFAULT_MAX_FRAME_SIZE`];
    /// at least 16 KiB, at most 1 GiB). It is announced to clients, which refuse to send larger requests.
    pub fn max_frame_size(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_frame_size = bytes.clamp(MIN_MAX_FRAME_SIZE, MAX_FRAME_SIZE_CAP);
        self
    }

    /// The largest frame header accepted from a client (default 16 KiB,
    /// [`DEFAULT_MAX_HEADER_SIZE`]; at least 1 KiB): it bounds the method name and metadata of a call. It is
    /// announced to clients, which fail calls with larger metadata locally.
    pub fn max_header_size(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_header_size = bytes.max(MIN_MAX_HEADER_SIZE);
        self
    }

    /// The most calls in flight on one connection, counting a call until its answer has been
    /// written to the socket (default [`DEFAULT_MAX_CONCURRENT_CALLS`]). Calls past it are
    /// refused with `ResourceExhausted`.
    pub fn max_concurrent_calls(mut self, calls: usize) -> ServerBuilder {
        self.config.max_concurrent_calls = calls;
        self
    }

    /// How long in-flight calls may run after shutdown starts (default 30 s); connections
    /// still busy then are closed.
    pub fn shutdown_grace(mut self, grace: Duration) -> ServerBuilder {
        self.config.shutdown_grace = grace;
        self
    }

    /// How long a new connection may take to send its preface (default 10 s).
    pub fn preface_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.preface_timeout = timeout;
        self
    }

    /// How long a connection may go with no call in flight and none started (default 5 min,
    /// [`DEFAULT_IDLE_TIMEOUT`]; `None`: no limit). Then the server sends a `GOAWAY`; the
    /// client, which opens its next call on a new connection, gets 10 s to close it before
    /// the server does. Keepalive pings do not count as calls.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> ServerBuilder {
        self.config.idle_timeout = timeout;
        self
    }

    /// How long a client may take to finish a frame it has begun to send (default 30 s,
    /// [`DEFAULT_READ_STALL_TIMEOUT`]; `None`: no limit). A client that stops in the middle
    /// of a frame, or trickles it in, is disconnected with a `GOAWAY` that says why.
    pub fn read_stall_timeout(mut self, timeout: Option<Duration>) -> ServerBuilder {
        self.config.read_stall_timeout = timeout;
        self
    }

    /// How long a client may go without reading anything of what the server has for it
    /// (default 30 s, [`DEFAULT_WRITE_STALL_TIMEOUT`]; `None`: no limit). Then it is
    /// disconnected.
    pub fn write_stall_timeout(mut self, timeout: Option<Duration>) -> ServerBuilder {
        self.config.write_stall_timeout = timeout;
        self
    }

    /// Pings a client after this much silence (default 60 s,
    /// [`DEFAULT_KEEPALIVE_INTERVAL`]; `None`: never), and disconnects it if the ping goes
    /// unanswered for the [keepalive timeout](Self::keepalive_timeout): a client that
    /// vanished (a host gone, a network cut) does not keep its calls and memory forever. A
    /// busy connection is never pinged.
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> ServerBuilder {
        self.config.keepalive_interval = interval;
        self
    }

    /// How long a keepalive ping may go unanswered (default 20 s,
    /// [`DEFAULT_KEEPALIVE_TIMEOUT`]).
    pub fn keepalive_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.keepalive_timeout = timeout;
        self
    }

    /// How long a server-streaming call may wait for its request (its one message and the
    /// client's `STREAM_END`) before the handler runs (default 30 s,
    /// [`DEFAULT_REQUEST_TIMEOUT`], or the call's deadline if sooner). Past it, the call
    /// ends with `DeadlineExceeded`.
    pub fn request_timeout(mut self, timeout: Duration) -> ServerBuilder {
        self.config.request_timeout = timeout;
        self
    }

    /// The flow-control window granted to a client for each stream it sends on: how many
    /// bytes of its messages may be in flight or waiting to be read by the handler
    /// (default 1 MiB, [`DEFAULT_STREAM_WINDOW`]; at least 64 KiB). It is also the budget of
    /// bytes a handler's [`StreamSender`](crate::StreamSender) may queue ahead of the socket.
    pub fn stream_window(mut self, bytes: u64) -> ServerBuilder {
        self.config.stream_window = bytes.max(MIN_STREAM_WINDOW);
        self
    }

    /// The flow-control window granted to a client for all its streams on one connection
    /// together (default 16 MiB, [`DEFAULT_CONNECTION_WINDOW`]; at least 1 MiB).
    pub fn connection_window(mut self, bytes: u64) -> ServerBuilder {
        self.config.connection_window = bytes.max(MIN_CONNECTION_WINDOW);
        self
    }

    /// Serves TLS (feature `tls`): every accepted connection starts with a TLS handshake, and
    /// with [`client_ca_root`](crate::transport::tls::ServerTlsConfig::client_ca_root),
    /// mutual TLS: clients without a valid certificate are turned away in the handshake.
    /// Handlers see what the handshake established in [`ServerContext::tls`](crate::ServerContext::tls). Fails if the
    /// configuration does (a key that does not match its certificate, say).
    ///
    /// Handshakes run in each connection's task, so a slow one holds up no other client;
    /// the handshake and the preface together get the
    /// [preface timeout](Self::preface_timeout).
    #[cfg(feature = "tls")]
    pub fn tls_config(
        self,
        config: crate::transport::tls::ServerTlsConfig,
    ) -> Result<ServerBuilder, crate::transport::tls::TlsError> {
        Ok(self.tls(config.build()?))
    }

    /// Serves TLS with an acceptor made beforehand (with
    /// [`ServerTlsConfig::build`](crate::transport::tls::ServerTlsConfig::build), or from a
    /// `rustls` configuration of your own); see [`tls_config`](Self::tls_config). Keep a
    /// clone of the acceptor to rotate the server's certificates without a restart
    /// ([`TlsAcceptor::reload`](crate::transport::tls::TlsAcceptor::reload),
    /// [`watch_files`](crate::transport::tls::TlsAcceptor::watch_files)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, acceptor: crate::transport::tls::TlsAcceptor) -> ServerBuilder {
        self.tls = Some(acceptor);
        self
    }

    fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Sets `TCP_NODELAY` on accepted sockets (default on: no 40 ms delayed-ACK stalls).
    pub fn tcp_nodelay(mut self, enabled: bool) -> ServerBuilder {
        self.config.tcp_nodelay = enabled;
        self
    }

    /// The most connections the server holds at once (default 10,000,
    /// [`DEFAULT_MAX_CONNECTIONS`]). At the limit it stops accepting (new connections wait in
    /// the listener's backlog, then are refused by the operating system) until one closes,
    /// and says so in the log.
    pub fn max_connections(mut self, connections: usize) -> ServerBuilder {
        self.config.max_connections = connections.max(1);
        self
    }

    /// The most connections the server holds at once from one IP address (default: no
    /// limit). A connection past it is answered with a `GOAWAY` (`ResourceExhausted`, saying
    /// why) and closed; the first refusal for an address is logged. Unix-socket and
    /// in-memory connections are not counted.
    pub fn max_connections_per_peer(mut self, connections: Option<usize>) -> ServerBuilder {
        self.config.max_connections_per_peer = connections.map(|n| n.max(1));
        self
    }

    /// The budget, in bytes, for received data the server holds for its calls across all its
    /// connections (default 512 MiB, [`DEFAULT_INPUT_BUDGET`]): stream messages the handlers
    /// have not read yet, and large frames being received. Past it, connections holding more
    /// than 256 KiB of it are not read until their handlers catch up (those holding less go
    /// on). Each connection also holds at most twice its [connection window](Self::connection_window).
    pub fn input_budget(mut self, bytes: usize) -> ServerBuilder {
        self.config.input_budget = bytes;
        self
    }

    /// Sets `SO_KEEPALIVE` on accepted sockets, with the idle time before the kernel's first
    /// probe (default 60 s); `None` turns it off.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> ServerBuilder {
        self.config.tcp_keepalive = idle;
        self
    }

    /// Binds `addr` (`host:port`, or `unix:/path` for a Unix socket) and serves until an
    /// error stops the listener.
    pub async fn serve(self, addr: impl ToString) -> io::Result<()> {
        self.serve_with_shutdown(addr, std::future::pending()).await
    }

    /// Binds `addr` (`host:port`, or `unix:/path` for a Unix socket) and serves until
    /// `signal` completes, then shuts down gracefully.
    pub async fn serve_with_shutdown(
        self,
        addr: impl ToString,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let address: Address =
            addr.to_string().parse().map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        match transport::bind(&address).await? {
            AnyListener::Tcp(listener) => self.serve_with_listener(listener, signal).await,
            #[cfg(unix)]
            AnyListener::Unix(listener) => self.serve_with_listener(listener, signal).await,
        }
    }

    /// Serves on a listener the caller bound (a `TcpListener` bound to port 0, to learn the
    /// port; a `UnixListener`; an in-memory [`MemoryListener`](crate::transport::memory)),
    /// until `signal` completes, then shuts down gracefully:
    ///
    /// 1. the health service reports `NOT_SERVING`, and the server's registrations (see
    ///    [`register`](Self::register)) are removed;
    /// 2. the listener is closed, so new connections are refused;
    /// 3. every connection gets a `GOAWAY`: its client sends no new calls on it, and calls
    ///    that still arrive are refused (`Unavailable`, flagged as not processed);
    /// 4. in-flight calls finish, up to the [grace period](Self::shutdown_grace), after which
    ///    the remaining connections are closed.
    pub async fn serve_with_listener<L: Listener>(
        self,
        mut listener: L,
        signal: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let tls = self.tls_enabled();
        let mut routes = self.routes;
        let health_name = HealthServer::<HealthService>::SERVICE_NAME;
        let mut mounted: Vec<&str> = routes.service_names().to_vec();
        mounted.retain(|name| *name != health_name);
        // The names the server is known by: registered (which may be other names), and mounted.
        let registered = match &self.registration {
            Some((_, registration)) => registration.names(&mounted),
            None => Vec::new(),
        };
        if self.serve_health {
            if !routes.contains(health_name) {
                let service = HealthService::new(self.health.clone());
                routes.add_bypassing_server_chain(Arc::new(HealthServer::new(service)));
            }
            self.health.set_serving_unless_set("");
            for name in mounted.iter().copied().chain(registered.iter().map(String::as_str)) {
                self.health.set_serving_unless_set(name);
            }
        }
        routes.set_server_chain(&self.chain);
        for hook in self.on_serve {
            hook(routes.services());
        }
        let local = listener.local_addr();
        let leases = match &self.registration {
            Some((registry, registration)) => {
                let local = local
                    .as_ref()
                    .map_err(|err| io::Error::new(err.kind(), format!("cannot register: {err}")))?;
                registration.register(registry, local, registered, tls).await?
            }
            None => Vec::new(),
        };
        let local = local.map_or_else(|_| "(no address)".to_owned(), |address| address.to_string());
        let routes = Arc::new(routes);
        let config = Arc::new(self.config);
        let options = SocketOptions { nodelay: config.tcp_nodelay, keepalive: config.tcp_keepalive };
        let shutdown = CancellationToken::new();
        let input = Arc::new(InputBudget::new(config.input_budget));
        let per_peer = config.max_connections_per_peer.map(PeerCounts::new);
        let mut at_limit = false;
        let mut connections = JoinSet::new();
        tracing::info!(%local, tls, services = ?routes.service_names(), "serving");

        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = transport::accept(&mut listener), if connections.len() < config.max_connections => match accepted {
                    Ok((io, peer)) => {
                        if let Err(err) = listener.configure(&io, &options) {
                            tracing::warn!(%peer, %err, "cannot configure accepted socket");
                        }
                        let admitted = match per_peer.as_ref().map(|counts| counts.admit(&peer)) {
                            None | Some(Ok(None)) => None,
                            Some(Ok(Some(admitted))) => Some(admitted),
                            Some(Err(open)) => {
                                tracing::debug!(%peer, open, "refusing a connection over the limit per address");
                                let why = Status::resource_exhausted(format!(
                                    "too many connections from this address ({open} open, the limit)"
                                ));
                                connections.spawn(limits::refuse(io, why));
                                continue;
                            }
                        };
                        let (routes, config, input, shutdown) =
                            (Arc::clone(&routes), Arc::clone(&config), Arc::clone(&input), shutdown.clone());
                        let limit = config.max_connections;
                        #[cfg(feature = "tls")]
                        let acceptor = self.tls.clone();
                        connections.spawn(async move {
                            let _admitted = admitted;
                            #[cfg(feature = "tls")]
                            if let Some(acceptor) = acceptor {
                                tls::serve_tls_connection(acceptor, io, peer, routes, config, input, shutdown).await;
                                return;
                            }
                            let accepted = conn::Accepted { peer, tls: None, preface_timeout: config.preface_timeout };
                            conn::serve_connection(io, accepted, routes, config, input, shutdown).await;
                        });
                        if connections.len() >= limit && !at_limit {
                            at_limit = true;
                            tracing::warn!(
                                limit,
                                "connection limit reached: accepting no more until one closes"
                            );
                        }
                    }
                    Err(err) => {
                        // Per-connection failures (a reset before accept, no descriptors
                        // left) must not end the server.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if at_limit && connections.len() < config.max_connections {
                        at_limit = false;
                        tracing::info!(open = connections.len(), "below the connection limit: accepting again");
                    }
                    if let Err(err) = joined
                        && err.is_panic()
                    {
                        tracing::error!(%err, "a connection task panicked; other connections are unaffected");
                    }
                }
            }
        }

        // Deregister first, so that clients stop choosing this server while it drains.
        self.health.shut_down();
        registration::deregister(leases).await;
        drop(listener);
        let open = connections.len();
        tracing::info!(%local, open, "shutting down: draining connections");
        shutdown.cancel();
        let drained = tokio::time::timeout(config.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(still_open = connections.len(), "grace period over: closing busy connections");
            connections.shutdown().await;
        }
        Ok(())
    }
}
