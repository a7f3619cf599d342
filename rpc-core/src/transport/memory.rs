//! An in-memory transport: a server and its clients in one process, joined by pipes instead
//! of sockets. For tests, and for running a service in-process behind the same API.
//!
//! ```
//! # async fn run() -> Result<(), rpc_core::Status> {
//! use rpc_core::{Channel, Server};
//! use rpc_core::transport::memory;
//!
//! let (listener, connector) = memory::channel();
//! tokio::spawn(Server::builder().serve_with_listener(listener, std::future::pending()));
//! let channel = Channel::builder("memory:0").connector(connector).connect().await?;
//! # Ok(()) }
//! ```

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::{Address, BoxIo, Connector, Listener, PeerAddr};

/// How many bytes each direction of a pipe holds before the writer waits: about what a
/// loopback socket buffers.
pub const PIPE_CAPACITY: usize = 256 * 1024;

/// A listener and the connector that reaches it. Every `connect` of the connector (whatever
/// the address) opens a new pipe, whose other end the listener accepts.
pub fn channel() -> (MemoryListener, MemoryConnector) {
    let (tx, rx) = mpsc::unbounded_channel();
    let next = Arc::new(AtomicU64::new(1));
    (MemoryListener { rx }, MemoryConnector { tx, next })
}

/// The server's end of [`channel`].
#[derive(Debug)]
pub struct MemoryListener {
    rx: mpsc::UnboundedReceiver<(DuplexStream, u64)>,
}

/// The clients' end of [`channel`]: connects to its [`MemoryListener`].
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    tx: mpsc::UnboundedSender<(DuplexStream, u64)>,
    next: Arc<AtomicU64>,
}

impl MemoryConnector {
    /// A new pipe to the listener: the client's end.
    pub fn connect_pipe(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(PIPE_CAPACITY);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.tx.send((server, n)).map_err(|_| {
            io::Error::new(io::ErrorKind::ConnectionRefused, "the in-memory listener is gone")
        })?;
        Ok(client)
    }
}

impl Connector for MemoryConnector {
    fn connect<'a>(&'a self, _address: &'a Address) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move { Ok(Box::new(self.connect_pipe()?) as BoxIo) })
    }
}

impl Listener for MemoryListener {
    type Io = DuplexStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(DuplexStream, PeerAddr)>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((pipe, n))) => Poll::Ready(Ok((pipe, PeerAddr::Memory(n)))),
            // Every connector is gone: nobody can connect any more, so nothing to accept.
            Poll::Ready(None) => Poll::Pending,
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<Address> {
        Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "an in-memory listener has no address"))
    }
}
