//! `stress`: what slow, silent and hostile peers cost a server, whether the server closes
//! them on time, and whether a well-behaved client beside them is still served.
//!
//! ```text
//! cargo run --release -p benches --bin stress            # the full run (about a minute)
//! cargo run --release -p benches --bin stress -- --quick # fewer peers, for CI
//! ```
//!
//! The server runs in a child process (this program, re-executed as `stress serve`), with
//! short timeouts (2 s idle, 2 s read and write stall, 3 s request) and a 64 MiB input budget,
//! so that the run sees them fire. It counts its live heap bytes (a counting allocator) and
//! reads its RSS; the parent asks for both between the steps of each attack. The attackers
//! speak the wire protocol by hand, as an outside attacker would, from docs/PROTOCOL.md. A
//! canary client calls the server every 5 ms throughout; each attack reports the canary's
//! slowest call while it ran.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use benches::{EchoClient, EchoMessage, EchoServer, EchoService, StreamRequest};
use rpc_core::transport::{Address, Listener, PeerAddr, SocketOptions};
use rpc_core::{Channel, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// ---------------------------------------------------------------------------------------
// The server child.

/// Counts live heap bytes: what the server holds, without the allocator's own retention
/// that RSS includes.
mod counting {
    // Implementing `GlobalAlloc` takes `unsafe`; each function only forwards to `System` with
    // the caller's own arguments, so the caller's guarantees are exactly what `System` requires.
    #![allow(unsafe_code)]

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub(crate) struct Counting;

    pub(crate) static LIVE: AtomicUsize = AtomicUsize::new(0);

    /// The largest single allocation since it was last reset.
    pub(crate) static LARGEST: AtomicUsize = AtomicUsize::new(0);

    fn note(size: usize) {
        LIVE.fetch_add(size, Ordering::Relaxed);
        if size > LARGEST.load(Ordering::Relaxed) {
            LARGEST.fetch_max(size, Ordering::Relaxed);
        }
    }

    // SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            // SAFETY: forwarded with the caller's pointer and layout.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            // SAFETY: forwarded with the caller's pointer, layout and size.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static ALLOC: Counting = Counting;
}

use counting::{LARGEST, LIVE};

/// Connections the server holds open now.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// A TCP listener that counts the connections the server holds.
struct CountingListener(TcpListener);

/// An accepted socket, counted until the server drops it.
struct Counted(TcpStream);

impl Drop for Counted {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::SeqCst);
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl Listener for CountingListener {
    type Io = Counted;

    fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(Counted, PeerAddr)>> {
        self.0.poll_accept(cx).map_ok(|(io, peer)| {
            OPEN.fetch_add(1, Ordering::SeqCst);
            (Counted(io), PeerAddr::Tcp(peer))
        })
    }

    fn local_addr(&self) -> std::io::Result<Address> {
        self.0.local_addr().map(Into::into)
    }

    fn configure(&self, io: &Counted, options: &SocketOptions) -> std::io::Result<()> {
        options.apply(&io.0)
    }
}

/// The server's resident set, from `/proc/self/statm` (0 where there is none).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|pages| pages.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// The child: serves the benchmark's echo service with short timeouts, and answers `mem`
/// on stdin with `mem <live heap bytes> <rss bytes> <open connections>`.
fn serve() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("listening {}", listener.local_addr()?);
        std::thread::spawn(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                println!(
                    "mem {} {} {} {}",
                    LIVE.load(Ordering::SeqCst),
                    rss(),
                    OPEN.load(Ordering::SeqCst),
                    LARGEST.swap(0, Ordering::SeqCst)
                );
                line.clear();
            }
            std::process::exit(0);
        });
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .idle_timeout(Some(Duration::from_secs(2)))
            .read_stall_timeout(Some(Duration::from_secs(2)))
            .write_stall_timeout(Some(Duration::from_secs(2)))
            .request_timeout(Duration::from_secs(3))
            .input_budget(64 << 20)
            .max_connections(20_000)
            .serve_with_listener(CountingListener(listener), std::future::pending())
            .await?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------
// The parent: the attacks.

/// What the server holds, as it says.
#[derive(Debug, Clone, Copy)]
struct Mem {
    live: usize,
    rss: usize,
    open: usize,
    /// The largest single allocation since the previous sample.
    largest: usize,
}

struct ServerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl ServerProcess {
    fn spawn() -> Result<ServerProcess, BoxError> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("the server's stdin and stdout are not piped".into());
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .ok_or("the server did not say where it listens")?
            .parse()?;
        Ok(ServerProcess { child, stdin, stdout, addr })
    }

    fn mem(&mut self) -> Result<Mem, BoxError> {
        writeln!(self.stdin, "mem")?;
        self.stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("the server died".into());
        }
        let fields: Vec<usize> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        match fields[..] {
            [live, rss, open, largest] => Ok(Mem { live, rss, open, largest }),
            _ => Err(format!("the server answered {line:?}").into()),
        }
    }

    /// Waits until `done` holds of the server's counts; how long it took.
    fn wait(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Mem) -> bool,
    ) -> Result<Duration, BoxError> {
        let start = Instant::now();
        loop {
            if done(&self.mem()?) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(format!("{what}: not within {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Frames, encoded by hand from docs/PROTOCOL.md.
mod wire {
    pub(crate) const PREFACE: [u8; 8] = [0x89, b'R', b'P', b'C', b'\r', b'\n', 1, 0];
    pub(crate) const SETTINGS: u8 = 0x01;
    pub(crate) const PING: u8 = 0x05;
    pub(crate) const PONG: u8 = 0x06;
    pub(crate) const GOAWAY: u8 = 0x07;
    pub(crate) const STREAM_OPEN: u8 = 0x08;
    pub(crate) const STREAM_MESSAGE: u8 = 0x09;
    pub(crate) const STREAM_END: u8 = 0x0a;
    pub(crate) const WINDOW_UPDATE: u8 = 0x0b;

    pub(crate) fn varint(mut value: u64, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }

    pub(crate) fn field(tag: u64, value: &[u8], out: &mut Vec<u8>) {
        varint(tag, out);
        varint(value.len() as u64, out);
        out.extend_from_slice(value);
    }

    pub(crate) fn varint_field(tag: u64, value: u64, out: &mut Vec<u8>) {
        let mut encoded = Vec::new();
        varint(value, &mut encoded);
        field(tag, &encoded, out);
    }

    pub(crate) fn frame(kind: u8, id: u64, header: &[u8], body: &[u8]) -> Vec<u8> {
        let mut payload = vec![kind, 0];
        varint(id, &mut payload);
        varint(header.len() as u64, &mut payload);
        payload.extend_from_slice(header);
        payload.extend_from_slice(body);
        let mut out = Vec::with_capacity(payload.len() + 5);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(&payload);
        out
    }

    /// The length prefix and fixed part of a frame of `len` payload bytes, of an unknown
    /// kind (skipped by a receiver), without the rest.
    pub(crate) fn unknown_frame_start(len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(len, &mut out);
        out.extend_from_slice(&[0x42, 0, 0, 0]);
        out
    }

    pub(crate) fn stream_open(id: u64, method: &str, metadata: Option<(&str, &[u8])>) -> Vec<u8> {
        let mut header = Vec::new();
        field(1, method.as_bytes(), &mut header);
        if let Some((key, value)) = metadata {
            let mut entry = Vec::new();
            varint(key.len() as u64, &mut entry);
            entry.extend_from_slice(key.as_bytes());
            entry.extend_from_slice(value);
            field(5, &entry, &mut header);
        }
        frame(STREAM_OPEN, id, &header, &[])
    }

    pub(crate) fn settings_window(window: u64) -> Vec<u8> {
        let mut header = Vec::new();
        varint_field(8, window, &mut header);
        frame(SETTINGS, 0, &header, &[])
    }

    pub(crate) fn window_update(id: u64, increment: u64) -> Vec<u8> {
        let mut header = Vec::new();
        varint_field(9, increment, &mut header);
        frame(WINDOW_UPDATE, id, &header, &[])
    }
}

/// A hand-driven connection, what it has read of the server's frames, and how much of the
/// server's preface is still to skip.
struct Raw(TcpStream, Vec<u8>, usize);

impl Raw {
    async fn connect(addr: SocketAddr) -> Result<Raw, BoxError> {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(&wire::PREFACE).await?;
        Ok(Raw(stream, Vec::new(), wire::PREFACE.len()))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), BoxError> {
        self.0.write_all(bytes).await?;
        Ok(())
    }

    /// Sends a `PING` and reads until its `PONG`: the server has taken everything sent
    /// before it.
    async fn sync(&mut self) -> Result<(), BoxError> {
        let body = *b"stresssy";
        self.send(&wire::frame(wire::PING, 0, &[], &body)).await?;
        let Raw(stream, buf, preface) = self;
        let mut at = 0;
        loop {
            let mut chunk = [0u8; 64 * 1024];
            let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut chunk)).await??;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            let skip = (*preface).min(n);
            *preface -= skip;
            buf.extend_from_slice(&chunk[skip..n]);
            while let Some((len, prefix)) = decode_varint(buf.get(at..).unwrap_or_default()) {
                let end = at + prefix + len as usize;
                if end > buf.len() {
                    break;
                }
                let payload = &buf[at + prefix..end];
                if payload.first() == Some(&wire::PONG) && payload.ends_with(&body) {
                    buf.drain(..end);
                    return Ok(());
                }
                if payload.first() == Some(&wire::GOAWAY) {
                    let why = String::from_utf8_lossy(payload);
                    return Err(format!("the server sent GOAWAY: {why:?}").into());
                }
                at = end;
            }
        }
    }
}

fn decode_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A client calling the server every 5 ms; the slowest call since the last look.
struct Canary {
    slowest: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
}

impl Canary {
    fn start(runtime: &tokio::runtime::Runtime, addr: SocketAddr) -> Canary {
        let slowest = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let (s, c, f) = (Arc::clone(&slowest), Arc::clone(&calls), Arc::clone(&failures));
        runtime.spawn(async move {
            let client = EchoClient::new(Channel::builder(addr).connect_lazy());
            loop {
                let start = Instant::now();
                let ok = client.echo(EchoMessage::default()).await.is_ok();
                s.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                c.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    f.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Canary { slowest, calls, failures }
    }

    /// The slowest call (ms) since the last look.
    fn take_slowest(&self) -> f64 {
        self.slowest.swap(0, Ordering::Relaxed) as f64 / 1000.0
    }
}

/// One attack's line of the report.
struct Row {
    attack: String,
    cost: String,
    closed: String,
    canary_ms: f64,
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn per(after: &Mem, before: &Mem, n: usize) -> (f64, f64) {
    let live = after.live.saturating_sub(before.live) as f64 / n as f64;
    let rss = after.rss.saturating_sub(before.rss) as f64 / n as f64;
    (live, rss)
}

struct Run {
    runtime: tokio::runtime::Runtime,
    server: ServerProcess,
    canary: Canary,
    quick: bool,
    rows: Vec<Row>,
}

impl Run {
    fn scale(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }

    fn settle(&mut self) -> Result<Mem, BoxError> {
        // The canary's own connection stays open.
        self.server.wait("connections closed", Duration::from_secs(30), |m| m.open <= 1)?;
        self.server.mem()
    }

    fn row(&mut self, attack: String, cost: String, closed: String) {
        let canary_ms = self.canary.take_slowest();
        println!("{attack:<58} {cost:<40} {closed:<34} canary slowest {canary_ms:.1} ms");
        self.rows.push(Row { attack, cost, closed, canary_ms });
    }

    fn idle_connections(&mut self) -> Result<(), BoxError> {
        let n = self.scale(1000, 200);
        let before = self.settle()?;
        let addr = self.server.addr;
        let conns = self.runtime.block_on(async {
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                let mut raw = Raw::connect(addr).await?;
                raw.send(&wire::frame(wire::SETTINGS, 0, &[], &[])).await?;
                conns.push(raw);
            }
            Ok::<_, BoxError>(conns)
        })?;
        self.server.wait("the idle connections are accepted", Duration::from_secs(30), |m| m.open > n)?;
        let held = self.server.mem()?;
        let (live, rss) = per(&held, &before, n);
        let closed = self.server.wait("idle connections closed", Duration::from_secs(30), |m| m.open <= 1)?;
        drop(conns);
        self.row(
            format!("{n} idle connections (preface and SETTINGS, then nothing)"),
            format!("{} heap, {} RSS per connection", kib(live), kib(rss)),
            format!("all closed {:.1} s after (idle 2 s + 2 s grace)", closed.as_secs_f64()),
        );
        Ok(())
    }

    fn held_calls(&mut self) -> Result<(), BoxError> {
        let n = self.scale(4000, 1000);
        let before = self.settle()?;
        let addr = self.server.addr;
        let conns = self.runtime.block_on(async {
            let mut conns = Vec::new();
            for chunk in 0..n.div_ceil(1000) {
                let mut raw = Raw::connect(addr).await?;
                let mut opens = Vec::new();
                for i in 0..1000.min(n - chunk * 1000) {
                    opens.extend(wire::stream_open(i as u64 + 1, "/bench.v1.Echo/Stream", None));
                }
                raw.send(&opens).await?;
                raw.sync().await?;
                conns.push(raw);
            }
            Ok::<_, BoxError>(conns)
        })?;
        let held = self.server.mem()?;
        let (live, rss) = per(&held, &before, n);
        // The requests never come: each call ends at the request timeout, then each
        // connection, idle, is closed.
        let closed = self.server.wait("held calls closed", Duration::from_secs(60), |m| m.open <= 1)?;
        drop(conns);
        self.row(
            format!("{n} held calls (STREAM_OPEN, the request never sent)"),
            format!("{} heap, {} RSS per call", kib(live), kib(rss)),
            format!("closed {:.1} s after (request 3 s, then idle)", closed.as_secs_f64()),
        );
        Ok(())
    }

    fn stalled_streams(&mut self) -> Result<(), BoxError> {
        let n = 64;
        let before = self.settle()?;
        let addr = self.server.addr;
        let conn = self.runtime.block_on(async {
            let mut raw = Raw::connect(addr).await?;
            // Generous windows: only the client's not reading stops the server.
            raw.send(&wire::settings_window(1 << 30)).await?;
            raw.send(&wire::window_update(0, 1 << 40)).await?;
            let request = prost::Message::encode_to_vec(&StreamRequest { count: 1 << 40, size: 0 });
            let mut frames = Vec::new();
            for id in 1..=n as u64 {
                frames.extend(wire::stream_open(id, "/bench.v1.Echo/Stream", None));
                frames.extend(wire::frame(wire::STREAM_MESSAGE, id, &[], &request));
                frames.extend(wire::frame(wire::STREAM_END, id, &[], &[]));
            }
            raw.send(&frames).await?;
            Ok::<_, BoxError>(raw)
        })?;
        // Until the socket buffers are full and the server's own buffers stop growing.
        let mut held = self.server.mem()?;
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.server.mem()?;
            if now.open <= 1 || now.live <= held.live + 64 * 1024 {
                held = Mem { live: held.live.max(now.live), ..now };
                break;
            }
            held = now;
        }
        let (live, _) = per(&held, &before, n);
        let closed =
            self.server.wait("the stalled connection closed", Duration::from_secs(30), |m| m.open <= 1)?;
        drop(conn);
        self.row(
            format!("{n} server streams of empty messages, never read"),
            format!("{} heap per stream ({} in all)", kib(live), mib(live * n as f64)),
            format!("closed {:.1} s after (write stall 2 s)", closed.as_secs_f64()),
        );
        Ok(())
    }

    fn churn(&mut self) -> Result<(), BoxError> {
        let n = self.scale(10_000, 2_000);
        let wave = 500;
        let before = self.settle()?;
        let addr = self.server.addr;
        let mut peak = before;
        for _ in 0..n / wave {
            let conns = self.runtime.block_on(async {
                let mut conns = Vec::with_capacity(wave);
                for _ in 0..wave {
                    conns.push(Raw::connect(addr).await?);
                }
                Ok::<_, BoxError>(conns)
            })?;
            let now = self.server.mem()?;
            peak = Mem {
                live: peak.live.max(now.live),
                rss: peak.rss.max(now.rss),
                open: peak.open.max(now.open),
                largest: peak.largest.max(now.largest),
            };
            drop(conns);
        }
        let after = self.settle()?;
        self.row(
            format!("{n} connections opened and dropped, {wave} at a time"),
            format!(
                "RSS {} at most, {} after (heap {} after)",
                mib(peak.rss as f64),
                mib(after.rss as f64),
                format_args!("{:+.1} KiB", (after.live as f64 - before.live as f64) / 1024.0)
            ),
            "closed as they are dropped".into(),
        );
        Ok(())
    }

    fn slow_senders(&mut self) -> Result<(), BoxError> {
        let n = self.scale(200, 50);
        let before = self.settle()?;
        let addr = self.server.addr;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let senders = self.runtime.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let mut raw = Raw::connect(addr).await?;
                let stop = Arc::clone(&stop);
                tasks.push(tokio::spawn(async move {
                    // A 1,000-byte frame begins, and comes a byte every 100 ms.
                    let _ = raw.send(&wire::unknown_frame_start(1000)).await;
                    while !stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if raw.send(&[0]).await.is_err() {
                            break;
                        }
                    }
                }));
            }
            Ok::<_, BoxError>(tasks)
        })?;
        std::thread::sleep(Duration::from_millis(1000));
        let during = self.server.mem()?;
        let (live, rss) = per(&during, &before, n);
        let closed = self.server.wait("slow senders closed", Duration::from_secs(30), |m| m.open <= 1)?;
        stop.store(true, Ordering::Relaxed);
        for task in senders {
            task.abort();
        }
        let after = self.server.mem()?;
        self.row(
            format!("{n} connections sending a frame a byte every 100 ms"),
            format!(
                "{} heap, {} RSS per connection; RSS {} after",
                kib(live),
                kib(rss),
                mib(after.rss as f64)
            ),
            format!("all closed {:.1} s after (read stall 2 s)", closed.as_secs_f64() + 1.0),
        );
        Ok(())
    }

    fn large_partial_frames(&mut self) -> Result<(), BoxError> {
        let n = self.scale(100, 20);
        let size: u64 = 4 << 20;
        let before = self.settle()?;
        let addr = self.server.addr;
        let senders = self.runtime.block_on(async {
            let mut senders = Vec::new();
            for _ in 0..n {
                let mut raw = Raw::connect(addr).await?;
                let mut bytes = wire::unknown_frame_start(size - 1);
                bytes.resize(size as usize - 16, 0);
                // The server may stop reading (its input budget): the rest stays in the
                // socket buffers, and the write finishes or fails on its own.
                senders.push(tokio::spawn(async move {
                    let _ = raw.send(&bytes).await;
                    std::future::pending::<()>().await;
                }));
            }
            Ok::<_, BoxError>(senders)
        })?;
        std::thread::sleep(Duration::from_millis(1500));
        let during = self.server.mem()?;
        let closed =
            self.server.wait("stalled large frames closed", Duration::from_secs(60), |m| m.open <= 1)?;
        for sender in senders {
            sender.abort();
        }
        let held = during.live.saturating_sub(before.live) as f64;
        self.row(
            format!("{n} connections sending 4 MiB less 16 bytes of a 4 MiB frame"),
            format!("{} heap in all (input budget 64 MiB)", mib(held)),
            format!("closed {:.1} s after (read stall 2 s)", closed.as_secs_f64() + 1.5),
        );
        Ok(())
    }

    fn metadata_pins(&mut self) -> Result<(), BoxError> {
        let n = self.scale(200, 50);
        let before = self.settle()?;
        let addr = self.server.addr;
        let conn = self.runtime.block_on(async {
            let mut raw = Raw::connect(addr).await?;
            let filler = {
                let mut frame = wire::unknown_frame_start(4 << 20);
                frame.resize(frame.len() + (4 << 20) - 4, 0);
                frame
            };
            for id in 1..=n as u64 {
                raw.send(&wire::stream_open(
                    id,
                    "/bench.v1.Echo/Stream",
                    Some(("x-trace", b"0123456789abcdef")),
                ))
                .await?;
                raw.send(&filler).await?;
            }
            raw.sync().await?;
            Ok::<_, BoxError>(raw)
        })?;
        let held = self.server.mem()?;
        let (live, _) = per(&held, &before, n);
        drop(conn);
        self.row(
            format!("{n} held streams with metadata, each followed by a 4 MiB frame"),
            format!("{} heap per held stream", kib(live)),
            "closed by the test (request timeout 3 s)".into(),
        );
        Ok(())
    }

    fn settings_flood(&mut self) -> Result<(), BoxError> {
        let settings = self.scale(200_000, 20_000);
        self.settle()?;
        let addr = self.server.addr;
        let took = self.runtime.block_on(async {
            let mut raw = Raw::connect(addr).await?;
            let mut opens = Vec::new();
            for id in 1..=1023u64 {
                opens.extend(wire::stream_open(id, "/bench.v1.Echo/Stream", None));
            }
            raw.send(&opens).await?;
            raw.sync().await?;
            let start = Instant::now();
            let mut flood = Vec::new();
            for window in 0..settings as u64 {
                flood.extend(wire::settings_window(65_536 + window));
                if flood.len() > 1 << 20 {
                    raw.send(&flood).await?;
                    flood.clear();
                }
            }
            raw.send(&flood).await?;
            raw.sync().await?;
            Ok::<_, BoxError>(start.elapsed())
        })?;
        self.row(
            format!("1023 held streams, then {settings} SETTINGS raising INITIAL_WINDOW"),
            format!("{:.0} ms to take them all", took.as_secs_f64() * 1000.0),
            "closed by the test".into(),
        );
        Ok(())
    }

    fn huge_size(&mut self) -> Result<(), BoxError> {
        let addr = self.server.addr;
        self.server.mem()?;
        let refused = self.runtime.block_on(async {
            let client = EchoClient::new(Channel::connect(addr).await?);
            let stream = client.stream(StreamRequest { count: 1, size: 1 << 40 }).await;
            let status = match stream {
                Ok(mut messages) => messages.message().await.err(),
                Err(status) => Some(status),
            };
            Ok::<_, BoxError>(status.map_or("no error".to_owned(), |s| s.code().to_string()))
        })?;
        let largest = self.server.mem()?.largest;
        self.row(
            "a 47-byte request asking the Stream handler for 2^40 bytes".into(),
            format!("answered {refused}; largest allocation meanwhile {}", kib(largest as f64)),
            "-".into(),
        );
        Ok(())
    }
}

/// An attack: it runs against the server and adds its row to the report.
type Attack = fn(&mut Run) -> Result<(), BoxError>;

/// The attacks, by name.
const ATTACKS: [(&str, Attack); 9] = [
    ("idle", Run::idle_connections),
    ("held", Run::held_calls),
    ("stalled", Run::stalled_streams),
    ("churn", Run::churn),
    ("slow", Run::slow_senders),
    ("large", Run::large_partial_frames),
    ("metadata", Run::metadata_pins),
    ("settings", Run::settings_flood),
    ("size", Run::huge_size),
];

fn run(quick: bool, only: Option<&str>) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut server = ServerProcess::spawn()?;
    let _ = server.mem()?;
    let canary = Canary::start(&runtime, server.addr);
    let mut run = Run { runtime, server, canary, quick, rows: Vec::new() };
    run.server.wait("the canary is connected", Duration::from_secs(10), |m| m.open == 1)?;
    run.canary.take_slowest();
    let base = run.server.mem()?;
    println!(
        "stress: server with the canary connected: heap {}, RSS {}{}",
        mib(base.live as f64),
        mib(base.rss as f64),
        if quick { " (quick run)" } else { "" }
    );
    for (name, attack) in ATTACKS {
        if only.is_none_or(|only| only == name) {
            attack(&mut run)?;
        }
    }
    let end = run.settle()?;
    let calls = run.canary.calls.load(Ordering::Relaxed);
    let failures = run.canary.failures.load(Ordering::Relaxed);
    println!(
        "stress: server alive at the end: heap {}, RSS {}; canary {calls} calls, {failures} failed, slowest {:.1} ms",
        mib(end.live as f64),
        mib(end.rss as f64),
        run.rows.iter().map(|r| r.canary_ms).fold(0.0, f64::max),
    );
    println!("\n| attack | what it cost the server | closed | canary's slowest call |\n|---|---|---|---|");
    for row in &run.rows {
        println!("| {} | {} | {} | {:.1} ms |", row.attack, row.cost, row.closed, row.canary_ms);
    }
    if failures > 0 {
        return Err(format!("{failures} canary calls failed").into());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).map(String::as_str);
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve(),
        _ if only.is_some_and(|only| !ATTACKS.iter().any(|(name, _)| *name == only)) => {
            Err(format!("--only takes one of: {}", ATTACKS.map(|(name, _)| name).join(", ")).into())
        }
        _ => run(quick, only),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("stress: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
