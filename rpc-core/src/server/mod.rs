//! The server: mount services, serve them on a TCP listener, shut down gracefully.
//!
//! ```no_run
//! use rpc_core::{Context, Server, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Ping { #[prost(uint64, tag = "1")] pub n: u64 }
//!
//! #[rpc_core::service]
//! pub trait Pinger {
//!     async fn ping(&self, ctx: &mut Context, req: Ping) -> Result<Ping, Status>;
//! }
//!
//! struct MyPinger;
//! impl Pinger for MyPinger {
//!     async fn ping(&self, _ctx: &mut Context, req: Ping) -> Result<Ping, Status> {
//!         Ok(req)
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let shutdown = async { tokio::signal::ctrl_c().await.ok(); };
//! Server::builder()
//!     .add_service(PingerServer::new(MyPinger))
//!     .serve_with_shutdown("127.0.0.1:50051", shutdown)
//!     .await
//! # }
//! ```

mod conn;
mod registration;
mod routes;

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::codegen::Service;
pub use crate::interceptor::Context;
pub use registration::Registration;

use crate::discovery::{AnyRegistry, Registry};
use crate::health::{HealthReporter, HealthServer, HealthService};
use crate::interceptor::{ServerChain, ServerInterceptor};
use crate::stream::{DEFAULT_CONNECTION_WINDOW, DEFAULT_STREAM_WINDOW};
use crate::transport::{self, Address, AnyListener, Listener, SocketOptions};
use crate::wire::{
    DEFAULT_MAX_FRAME_SIZE, DEFAULT_MAX_HEADER_SIZE, MAX_FRAME_SIZE_CAP, MIN_CONNECTION_WINDOW,
    MIN_STREAM_WINDOW,
};
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
    pub(crate) tcp_nodelay: bool,
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
            tcp_nodelay: true,
            stream_window: DEFAULT_STREAM_WINDOW,
            connection_window: DEFAULT_CONNECTION_WINDOW,
        }
    }
}

/// A server's route table (full method name to handler), exposed for the dispatch
/// micro-benchmark only: not part of the API, and may change at any time.
#[doc(hidden)]
pub struct DispatchTable(Routes);

impl DispatchTable {
    /// The table of a server with `services` mounted.
    pub fn new(services: impl IntoIterator<Item = Arc<dyn Service>>) -> DispatchTable {
        let mut routes = Routes::default();
        for service in services {
            routes.add(service, ServerChain::new());
        }
        DispatchTable(routes)
    }

    /// Whether a call to `path` (as read from the wire) has a handler: the lookup every call
    /// starts with.
    pub fn routes(&self, path: &[u8]) -> bool {
        self.0.get(path).is_some()
    }
}

impl std::fmt::Debug for DispatchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatchTable").field("services", &self.0.service_names()).finish()
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
    /// at most 1 GiB). It is announced to clients, which refuse to send larger requests.
    pub fn max_frame_size(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_frame_size = bytes.min(MAX_FRAME_SIZE_CAP);
        self
    }

    /// The largest frame header accepted from a client (default 16 KiB,
    /// [`DEFAULT_MAX_HEADER_SIZE`]): it bounds the method name and metadata of a call. It is
    /// announced to clients, which fail calls with larger metadata locally.
    pub fn max_header_size(mut self, bytes: usize) -> ServerBuilder {
        self.config.max_header_size = bytes;
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

    /// Sets `TCP_NODELAY` on accepted sockets (default on: no 40 ms delayed-ACK stalls).
    pub fn tcp_nodelay(mut self, enabled: bool) -> ServerBuilder {
        self.config.tcp_nodelay = enabled;
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
                registration.register(registry, local, registered).await?
            }
            None => Vec::new(),
        };
        let local = local.map_or_else(|_| "(no address)".to_owned(), |address| address.to_string());
        let routes = Arc::new(routes);
        let config = Arc::new(self.config);
        let options = SocketOptions { nodelay: config.tcp_nodelay, ..SocketOptions::default() };
        let shutdown = CancellationToken::new();
        let mut connections = JoinSet::new();
        tracing::info!(%local, services = ?routes.service_names(), "serving");

        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                accepted = transport::accept(&mut listener) => match accepted {
                    Ok((io, peer)) => {
                        if let Err(err) = listener.configure(&io, &options) {
                            tracing::warn!(%peer, %err, "cannot configure accepted socket");
                        }
                        let conn = conn::serve_connection(
                            io, peer, Arc::clone(&routes), Arc::clone(&config), shutdown.clone(),
                        );
                        connections.spawn(conn);
                    }
                    Err(err) => {
                        // Per-connection failures (a reset before accept, no descriptors
                        // left) must not end the server.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
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
