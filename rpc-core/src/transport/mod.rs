//! Byte streams a connection runs over: TCP, Unix sockets, and an in-memory pipe for tests.
//!
//! The connection core works on any [`Io`] (anything `AsyncRead + AsyncWrite + Unpin + Send`);
//! this module is the thin layer that makes them. A client reaches a server through a
//! [`Connector`] (by default [`DefaultConnector`], which dials an [`Address`]); a server
//! accepts from a [`Listener`] (`tokio`'s `TcpListener` and `UnixListener`, or a
//! [`MemoryListener`](memory::MemoryListener)). With the `tls` feature, [`tls`] runs TLS and
//! mutual TLS over any of them.
//!
//! ```
//! use rpc_core::transport::Address;
//!
//! assert_eq!("127.0.0.1:50051".parse::<Address>().unwrap(), Address::Tcp("127.0.0.1:50051".into()));
//! assert_eq!("unix:/run/app.sock".parse::<Address>().unwrap(), Address::Unix("/run/app.sock".into()));
//! assert!("http://127.0.0.1:50051".parse::<Address>().is_err());
//! ```

pub mod memory;
#[cfg(feature = "tls")]
pub mod tls;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// A byte stream a connection can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A boxed [`Io`]: what a [`Connector`] hands a client.
pub type BoxIo = Box<dyn Io>;

/// Where a server listens and a client connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address, `host:port` (the host is resolved at each connect).
    Tcp(String),
    /// A Unix domain socket's path, written `unix:/path/to/socket`.
    Unix(PathBuf),
}

/// Why a string is not an [`Address`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason}")]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(input: &str) -> Result<Address, AddressError> {
        let error = |reason| AddressError { input: input.to_owned(), reason };
        if let Some(path) = input.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(error("a unix: address needs a socket path, as in unix:/run/app.sock"));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        if input.contains("://") {
            return Err(error("expected host:port or unix:/path, without a scheme such as http://"));
        }
        match input.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(input.to_owned()))
            }
            _ => Err(error("expected host:port (such as 127.0.0.1:50051) or unix:/path")),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(address) => f.write_str(address),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(address: SocketAddr) -> Address {
        Address::Tcp(address.to_string())
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A peer on a Unix domain socket (clients' sockets are usually unnamed).
    Unix(Option<PathBuf>),
    /// The other end of an in-memory pipe, numbered in the order of connection.
    Memory(u64),
}

impl PeerAddr {
    /// The peer's socket address, for a TCP peer.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Tcp(address) => Some(*address),
            _ => None,
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Tcp(address) => address.fmt(f),
            PeerAddr::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            PeerAddr::Unix(None) => f.write_str("unix:(unnamed)"),
            PeerAddr::Memory(n) => write!(f, "memory:{n}"),
        }
    }
}

/// What a TLS handshake established about the peer: a server's handlers see it in
/// [`Context::tls`](crate::ServerContext::tls) when the server serves TLS (feature `tls`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub(crate) peer_certificates: Vec<bytes::Bytes>,
    pub(crate) peer_dns_names: Vec<String>,
    pub(crate) peer_uri_names: Vec<String>,
    pub(crate) peer_subject: Option<String>,
    pub(crate) server_name: Option<String>,
    pub(crate) alpn_protocol: Option<bytes::Bytes>,
    pub(crate) protocol_version: Option<&'static str>,
}

impl TlsInfo {
    /// The certificate chain the peer presented, DER-encoded, its own certificate first;
    /// verified against the trusted CAs. Empty if it presented none (a server that does not
    /// ask for client certificates, or lets clients without one in).
    pub fn peer_certificates(&self) -> &[bytes::Bytes] {
        &self.peer_certificates
    }

    /// The DNS names of the peer's own certificate (its subject alternative names; wildcard
    /// names as written, `*.example.com`): who a client is, under mutual TLS. Empty without
    /// a certificate.
    pub fn peer_dns_names(&self) -> &[String] {
        &self.peer_dns_names
    }

    /// The URIs of the peer's own certificate (its subject alternative names), such as a
    /// SPIFFE ID `spiffe://example.org/ns/prod/sa/billing`. Empty without a certificate.
    pub fn peer_uri_names(&self) -> &[String] {
        &self.peer_uri_names
    }

    /// The subject of the peer's own certificate, as text in the RFC 4514 style
    /// (`CN=alice,OU=payments,O=Acme`; the common attributes only: CN, O, OU, C, ST, L,
    /// STREET, SERIALNUMBER, DC). `None` without a certificate, or for an empty subject (a
    /// SPIFFE certificate's identity is in its URI names).
    pub fn peer_subject(&self) -> Option<&str> {
        self.peer_subject.as_deref()
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The application protocol agreed by ALPN (`rpc/1`), if the client offered it.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn_protocol.as_deref()
    }

    /// The TLS version agreed, as `TLSv1_3` or `TLSv1_2`.
    pub fn protocol_version(&self) -> Option<&'static str> {
        self.protocol_version
    }
}

/// Options for the sockets a client opens or a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `TCP_NODELAY` (default on): every frame is a complete unit of work, and Nagle's
    /// algorithm with delayed ACKs would add ~40 ms stalls.
    pub nodelay: bool,
    /// `SO_KEEPALIVE`, with the idle time before the kernel's first probe (default 60 s):
    /// a peer whose host vanished is found even on a connection the protocol's own
    /// keepalive does not ping. `None` leaves it off.
    pub keepalive: Option<Duration>,
}

/// The default idle time before TCP keepalive probes start.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions { nodelay: true, keepalive: Some(DEFAULT_TCP_KEEPALIVE) }
    }
}

impl SocketOptions {
    /// Applies the options to a TCP socket.
    pub fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(self.nodelay)?;
        let socket = socket2::SockRef::from(stream);
        match self.keepalive {
            Some(idle) => socket.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle)),
            None => socket.set_keepalive(false),
        }
    }
}

/// Makes the byte streams a client's connections run over.
///
/// [`DefaultConnector`] dials TCP and Unix addresses; implement this to reach servers another
/// way (an in-memory pipe, a tunnel, a wrapped stream).
pub trait Connector: Send + Sync + 'static {
    /// A new byte stream to `address`.
    fn connect<'a>(&'a self, address: &'a Address) -> BoxFuture<'a, io::Result<BoxIo>>;
}

/// Dials TCP (`host:port`, with `TCP_NODELAY` on unless turned off) and Unix (`unix:/path`)
/// addresses.
#[derive(Debug, Clone, Copy)]
pub struct DefaultConnector {
    tcp: SocketOptions,
}

impl DefaultConnector {
    /// A connector with `TCP_NODELAY` on.
    pub fn new() -> DefaultConnector {
        DefaultConnector { tcp: SocketOptions::default() }
    }

    /// Sets `TCP_NODELAY` on the sockets it opens.
    pub fn tcp_nodelay(mut self, enabled: bool) -> DefaultConnector {
        self.tcp.nodelay = enabled;
        self
    }

    /// Sets `SO_KEEPALIVE` on the sockets it opens, with the idle time before the first
    /// probe (default 60 s); `None` turns it off.
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> DefaultConnector {
        self.tcp.keepalive = idle;
        self
    }
}

impl Default for DefaultConnector {
    fn default() -> Self {
        DefaultConnector::new()
    }
}

impl Connector for DefaultConnector {
    fn connect<'a>(&'a self, address: &'a Address) -> BoxFuture<'a, io::Result<BoxIo>> {
        Box::pin(async move {
            match address {
                Address::Tcp(target) => {
                    let stream = TcpStream::connect(target.as_str()).await?;
                    self.tcp.apply(&stream)?;
                    Ok(Box::new(stream) as BoxIo)
                }
                Address::Unix(path) => connect_unix(path).await,
            }
        })
    }
}

#[cfg(unix)]
async fn connect_unix(path: &Path) -> io::Result<BoxIo> {
    Ok(Box::new(tokio::net::UnixStream::connect(path).await?))
}

#[cfg(not(unix))]
async fn connect_unix(path: &Path) -> io::Result<BoxIo> {
    Err(io::Error::new(io::ErrorKind::Unsupported, format!("no Unix sockets here ({})", path.display())))
}

/// Accepts the byte streams a server's connections run over.
pub trait Listener: Send + 'static {
    /// The streams it accepts.
    type Io: Io;

    /// The next connection, and who it is from.
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, PeerAddr)>>;

    /// Where it listens: what a server registers for clients to dial.
    fn local_addr(&self) -> io::Result<Address>;

    /// Applies `options` to an accepted stream; the default does nothing (they concern TCP).
    fn configure(&self, _io: &Self::Io, _options: &SocketOptions) -> io::Result<()> {
        Ok(())
    }
}

impl Listener for TcpListener {
    type Io = TcpStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, PeerAddr)>> {
        TcpListener::poll_accept(self, cx).map_ok(|(stream, peer)| (stream, PeerAddr::Tcp(peer)))
    }

    fn local_addr(&self) -> io::Result<Address> {
        TcpListener::local_addr(self).map(Address::from)
    }

    fn configure(&self, io: &TcpStream, options: &SocketOptions) -> io::Result<()> {
        options.apply(io)
    }
}

#[cfg(unix)]
impl Listener for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(Self::Io, PeerAddr)>> {
        tokio::net::UnixListener::poll_accept(self, cx)
            .map_ok(|(stream, peer)| (stream, PeerAddr::Unix(peer.as_pathname().map(Path::to_path_buf))))
    }

    fn local_addr(&self) -> io::Result<Address> {
        let address = tokio::net::UnixListener::local_addr(self)?;
        match address.as_pathname() {
            Some(path) => Ok(Address::Unix(path.to_path_buf())),
            None => Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "the Unix socket has no path")),
        }
    }
}

/// The next connection from `listener`.
pub(crate) fn accept<L: Listener>(
    listener: &mut L,
) -> impl Future<Output = io::Result<(L::Io, PeerAddr)>> + '_ {
    std::future::poll_fn(move |cx| listener.poll_accept(cx))
}

/// Binds a listener for `address`: TCP, or a Unix socket (an old socket file at the path is
/// replaced).
pub(crate) async fn bind(address: &Address) -> io::Result<AnyListener> {
    match address {
        Address::Tcp(address) => Ok(AnyListener::Tcp(TcpListener::bind(address.as_str()).await?)),
        #[cfg(unix)]
        Address::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                std::fs::remove_file(path)?;
            }
            Ok(AnyListener::Unix(tokio::net::UnixListener::bind(path)?))
        }
        #[cfg(not(unix))]
        Address::Unix(path) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("no Unix sockets here ({})", path.display()),
        )),
    }
}

/// A TCP or Unix listener, as [`bind`] makes them.
pub(crate) enum AnyListener {
    Tcp(TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_print_back() {
        for text in ["127.0.0.1:80", "localhost:50051", "[::1]:9", "unix:/tmp/a.sock"] {
            let address: Address = text.parse().expect(text);
            assert_eq!(address.to_string(), text);
        }
        assert_eq!(
            "unix:///tmp/a.sock".parse::<Address>().expect("unix"),
            Address::Unix("/tmp/a.sock".into())
        );
    }

    #[test]
    fn addresses_with_a_scheme_or_without_a_port_are_refused_with_a_reason() {
        let err = "http://127.0.0.1:80".parse::<Address>().expect_err("scheme");
        assert!(err.to_string().contains("without a scheme"), "{err}");
        for bad in ["127.0.0.1", "host:port", ":80", "unix:", ""] {
            assert!(bad.parse::<Address>().is_err(), "{bad}");
        }
    }
}
