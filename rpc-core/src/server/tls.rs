//! The server's side of TLS: the handshake of each accepted connection, in the connection's
//! own task, before the connection core starts; and a plain answer to plaintext clients.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;

use super::ServerConfig;
use super::conn::{Accepted, serve_connection};
use super::routes::Routes;
use crate::conn::{InputBudget, status_frame};
use crate::status::Status;
use crate::transport::tls::TlsAcceptor;
use crate::transport::{Io, PeerAddr};
use crate::wire::{FrameKind, MAGIC, PREFACE};

/// What a plaintext client of a TLS server is told, in its own protocol, before the close.
pub(crate) const TLS_REQUIRED: &str = "this server requires TLS";

/// Runs the TLS handshake on an accepted connection, then serves it. The handshake and the
/// client's preface together get the preface timeout; shutdown abandons a handshake.
pub(crate) async fn serve_tls_connection<T: Io>(
    acceptor: TlsAcceptor,
    io: T,
    peer: PeerAddr,
    routes: Arc<Routes>,
    config: Arc<ServerConfig>,
    input: Arc<InputBudget>,
    shutdown: CancellationToken,
) {
    let started = tokio::time::Instant::now();
    let handshake = tokio::time::timeout(config.preface_timeout, handshake(&acceptor, io));
    let (stream, info) = tokio::select! {
        handshake = handshake => match handshake {
            Ok(Ok(accepted)) => accepted,
            Ok(Err(err)) => {
                tracing::info!(%peer, %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(%peer, timeout = ?config.preface_timeout, "TLS handshake timed out");
                return;
            }
        },
        () = shutdown.cancelled() => return,
    };
    let left = config.preface_timeout.saturating_sub(started.elapsed());
    let accepted = Accepted { peer, tls: Some(Arc::new(info)), preface_timeout: left };
    serve_connection(stream, accepted, routes, config, input, shutdown).await;
}

/// The handshake, after a look at the first byte: a client that starts with the protocol's
/// magic instead of a TLS record speaks plaintext, and gets the server's preface and a
/// `GOAWAY` saying TLS is required (rather than a bare close it could not explain).
async fn handshake<T: Io>(
    acceptor: &TlsAcceptor,
    mut io: T,
) -> io::Result<(tokio_rustls::server::TlsStream<Prefixed<T>>, crate::transport::TlsInfo)> {
    let mut first = [0u8; 1];
    let read = io.read(&mut first).await?;
    if read == 1 && first[0] == MAGIC[0] {
        let mut answer = BytesMut::from(&PREFACE[..]);
        status_frame(FrameKind::GoAway, 0, Status::unavailable(TLS_REQUIRED)).encode_unchecked(&mut answer);
        io.write_all(&answer).await?;
        io.shutdown().await?;
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a plaintext client: told that TLS is required",
        ));
    }
    acceptor.accept(Prefixed { first: (read == 1).then_some(first[0]), io }).await
}

/// A byte stream with one byte already read from it put back in front.
pub(crate) struct Prefixed<T> {
    first: Option<u8>,
    io: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(byte) = this.first.take_if(|_| buf.remaining() > 0) {
            buf.put_slice(&[byte]);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
