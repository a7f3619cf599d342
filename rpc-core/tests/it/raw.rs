//! A hand-driven client speaking the wire protocol directly, to send what a well-behaved
//! client never would.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rpc_core::internals::wire::{Frame, FrameCodec, FrameKind, PREFACE, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Decoder, Encoder};

/// How long a raw client waits for anything before failing the test.
const WAIT: Duration = Duration::from_secs(10);

pub struct RawClient {
    pub stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl RawClient {
    /// Connects and sends the preface, nothing else.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut raw = RawClient::connect_bare(addr).await;
        raw.send_bytes(&PREFACE).await;
        raw
    }

    /// Connects and sends nothing.
    pub async fn connect_bare(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawClient::from_stream(stream)
    }

    /// A fake server: accepts one connection on `listener` and sends the preface, nothing
    /// else.
    pub async fn accept(listener: &TcpListener) -> RawClient {
        let (socket, _) = listener.accept().await.expect("accept");
        let mut raw = RawClient::from_stream(socket);
        raw.send_bytes(&PREFACE).await;
        raw
    }

    /// Speaks the protocol over an accepted or connected socket, expecting the peer's preface.
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("nodelay");
        RawClient { stream, codec: FrameCodec::new().expect_preface(), buf: BytesMut::new() }
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    pub async fn send(&mut self, frame: &Frame) {
        let mut out = BytesMut::new();
        FrameCodec::new().encode(frame, &mut out).expect("encode");
        self.send_bytes(&out).await;
    }

    /// The next frame from the server; `Ok(None)` when it closed the connection.
    pub async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self.codec.decode(&mut self.buf)? {
                    return Ok(Some(frame));
                }
                let n = match self.stream.read_buf(&mut self.buf).await {
                    Ok(n) => n,
                    // A reset is the server closing on us too.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    return self.codec.decode_eof(&mut self.buf);
                }
            }
        })
        .await
        .expect("the server answers within the wait")
    }

    /// The next frame of `kind`, skipping others (settings, pings).
    pub async fn next_of(&mut self, kind: FrameKind) -> Frame {
        loop {
            let frame = self.next().await.expect("valid frames").expect("connection still open");
            if frame.kind == kind {
                return frame;
            }
        }
    }

    /// Every frame until the server closes the connection.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await.expect("valid frames") {
            frames.push(frame);
        }
        frames
    }

    /// Reads raw bytes until the server closes the connection.
    pub async fn raw_until_closed(&mut self) -> Vec<u8> {
        let mut all = self.buf.to_vec();
        tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => all.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("the server closes within the wait");
        all
    }
}
