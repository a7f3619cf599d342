//! The service every test talks to, and helpers to run it on a real socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rpc_core::server::ServerBuilder;
use rpc_core::{Code, Context, Server, Status};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sleep {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub millis: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Fail {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeadlineInfo {
    #[prost(bool, tag = "1")]
    pub has_deadline: bool,
    #[prost(uint64, tag = "2")]
    pub remaining_millis: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Size {
    #[prost(uint64, tag = "1")]
    pub bytes: u64,
}

/// The service under test.
#[rpc_core::service(package = "test.v1")]
pub trait Test {
    /// Returns the payload; copies request metadata `x-echo` into the response metadata.
    async fn echo(&self, ctx: &mut Context, request: Echo) -> Result<Echo, Status>;
    /// Sleeps, then returns the id. Records starts, finishes, and drops mid-sleep.
    async fn sleep(&self, ctx: &mut Context, request: Sleep) -> Result<Sleep, Status>;
    /// Fails with the code and message asked for, with metadata `x-detail: yes`.
    async fn fail(&self, ctx: &mut Context, request: Fail) -> Result<Empty, Status>;
    /// Panics.
    async fn panic(&self, ctx: &mut Context, request: Empty) -> Result<Empty, Status>;
    /// Reports the deadline the handler sees.
    async fn deadline(&self, ctx: &mut Context, request: Empty) -> Result<DeadlineInfo, Status>;
    /// Answers a payload of the size asked for. Counts as a start.
    async fn big(&self, ctx: &mut Context, request: Size) -> Result<Echo, Status>;
    /// Computes without ever yielding until the probe's `release` is set. Counts as a start.
    async fn spin(&self, ctx: &mut Context, request: Empty) -> Result<Empty, Status>;
}

/// Counters the tests observe the handlers through.
#[derive(Debug, Default)]
pub struct Probe {
    pub started: AtomicUsize,
    pub finished: AtomicUsize,
    /// Handlers dropped before finishing: cancelled, timed out, or aborted.
    pub abandoned: AtomicUsize,
    pub peers: Mutex<HashSet<rpc_core::transport::PeerAddr>>,
    /// Lets `spin` return.
    pub release: std::sync::atomic::AtomicBool,
}

impl Probe {
    pub fn abandoned(&self) -> usize {
        self.abandoned.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Default)]
pub struct TestService {
    pub probe: Arc<Probe>,
}

/// Counts a handler that is dropped before it completes.
struct AbandonGuard<'a> {
    probe: &'a Probe,
    done: bool,
}

impl Drop for AbandonGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.probe.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Test for TestService {
    async fn echo(&self, ctx: &mut Context, request: Echo) -> Result<Echo, Status> {
        if let Some(value) = ctx.metadata().get("x-echo").cloned() {
            ctx.response_metadata_mut().insert("x-echo", value);
        }
        Ok(request)
    }

    async fn sleep(&self, ctx: &mut Context, request: Sleep) -> Result<Sleep, Status> {
        self.probe.peers.lock().expect("lock").insert(ctx.peer().clone());
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = AbandonGuard { probe: &self.probe, done: false };
        tokio::time::sleep(Duration::from_millis(request.millis)).await;
        guard.done = true;
        self.probe.finished.fetch_add(1, Ordering::SeqCst);
        Ok(request)
    }

    async fn fail(&self, _ctx: &mut Context, request: Fail) -> Result<Empty, Status> {
        let mut status = Status::new(Code::from_u32(request.code), request.message);
        status.metadata_mut().insert("x-detail", "yes");
        Err(status)
    }

    async fn panic(&self, _ctx: &mut Context, _request: Empty) -> Result<Empty, Status> {
        panic!("the handler panicked on purpose");
    }

    async fn deadline(&self, ctx: &mut Context, _request: Empty) -> Result<DeadlineInfo, Status> {
        Ok(DeadlineInfo {
            has_deadline: ctx.deadline().is_some(),
            remaining_millis: ctx.remaining().map_or(0, |d| d.as_millis() as u64),
        })
    }

    async fn big(&self, _ctx: &mut Context, request: Size) -> Result<Echo, Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        Ok(Echo { payload: Bytes::from(vec![7u8; request.bytes as usize]) })
    }

    async fn spin(&self, _ctx: &mut Context, request: Empty) -> Result<Empty, Status> {
        self.probe.started.fetch_add(1, Ordering::SeqCst);
        // Synchronous work, as a handler that parses or hashes for long does: no await.
        while !self.probe.release.load(Ordering::SeqCst) {
            std::hint::spin_loop();
        }
        Ok(request)
    }
}

/// A server running in the background on a loopback port.
pub struct Running {
    pub addr: SocketAddr,
    pub probe: Arc<Probe>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Starts a graceful shutdown and waits for the server to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.handle).await.expect("server task").expect("server result");
    }

    /// Starts a graceful shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server to return after a shutdown began.
    pub async fn join(self) {
        self.handle.await.expect("server task").expect("server result");
    }

    /// Kills the server: the task is aborted, its sockets closed, as if the process died.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Serves the test service on a fresh loopback port.
pub async fn serve() -> Running {
    serve_with(|b| b).await
}

/// Serves the test service with builder options.
pub async fn serve_with(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_on(listener, configure).await
}

/// Serves the test service on `listener`.
pub async fn serve_on(
    listener: TcpListener,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Running {
    serve_configured(listener, Server::builder(), configure).await
}

/// Serves the test service on `listener`, mounted on a builder made earlier.
pub async fn serve_from(builder: ServerBuilder, listener: TcpListener) -> Running {
    serve_configured(listener, builder, |b| b).await
}

async fn serve_configured(
    listener: TcpListener,
    builder: ServerBuilder,
    configure: impl FnOnce(ServerBuilder) -> ServerBuilder,
) -> Running {
    let addr = listener.local_addr().expect("addr");
    let service = TestService::default();
    let probe = Arc::clone(&service.probe);
    let (stop, stopped) = oneshot::channel::<()>();
    let builder = configure(builder.add_service(TestServer::new(service)));
    let handle = tokio::spawn(builder.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    Running { addr, probe, stop: Some(stop), handle }
}

/// Polls `condition` until it holds, failing the test after ten seconds.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a [`TrackedListener`] saw happen to the connections it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEvent {
    Accepted,
    /// The server dropped the connection's byte stream: it closed it.
    Closed,
}

/// A TCP listener that reports each connection it accepts and each the server closes: what
/// tests of the server's timeouts and limits wait on.
pub struct TrackedListener {
    inner: TcpListener,
    events: tokio::sync::mpsc::UnboundedSender<ConnEvent>,
}

/// An accepted socket that reports its close.
pub struct Tracked {
    io: tokio::net::TcpStream,
    events: tokio::sync::mpsc::UnboundedSender<ConnEvent>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let _ = self.events.send(ConnEvent::Closed);
    }
}

impl tokio::io::AsyncRead for Tracked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Tracked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl rpc_core::transport::Listener for TrackedListener {
    type Io = Tracked;

    fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(Tracked, rpc_core::transport::PeerAddr)>> {
        self.inner.poll_accept(cx).map_ok(|(io, peer)| {
            let _ = self.events.send(ConnEvent::Accepted);
            (Tracked { io, events: self.events.clone() }, rpc_core::transport::PeerAddr::Tcp(peer))
        })
    }

    fn local_addr(&self) -> std::io::Result<rpc_core::transport::Address> {
        self.inner.local_addr().map(Into::into)
    }

    fn configure(&self, io: &Tracked, options: &rpc_core::transport::SocketOptions) -> std::io::Result<()> {
        options.apply(&io.io)
    }
}

/// The connection events of a [`TrackedListener`], as the test waits for them.
pub struct ConnEvents(tokio::sync::mpsc::UnboundedReceiver<ConnEvent>);

impl ConnEvents {
    /// The next event, failing the test after ten seconds.
    pub async fn next(&mut self) -> ConnEvent {
        tokio::time::timeout(Duration::from_secs(10), self.0.recv())
            .await
            .expect("a connection event within the wait")
            .expect("the listener is alive")
    }

    /// Waits for `event`, failing the test on any other first.
    pub async fn expect(&mut self, event: ConnEvent) {
        assert_eq!(self.next().await, event);
    }
}

/// Serves the test service (and whatever `configure` mounts) on a loopback port, reporting
/// each connection accepted and closed.
pub async fn serve_tracked(configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> (Running, ConnEvents) {
    let inner = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = inner.local_addr().expect("addr");
    let (events, received) = tokio::sync::mpsc::unbounded_channel();
    let service = TestService::default();
    let probe = Arc::clone(&service.probe);
    let (stop, stopped) = oneshot::channel::<()>();
    let builder = configure(Server::builder().add_service(TestServer::new(service)));
    let listener = TrackedListener { inner, events };
    let handle = tokio::spawn(builder.serve_with_listener(listener, async {
        let _ = stopped.await;
    }));
    (Running { addr, probe, stop: Some(stop), handle }, ConnEvents(received))
}
