//! The same calls over every byte stream the connection core runs on: TCP, a Unix socket,
//! and an in-memory pipe. Each scenario below runs once per transport (the modules `tcp`,
//! `unix` and `memory` at the end).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use rpc_core::client::ChannelBuilder;
use rpc_core::server::ServerBuilder;
use rpc_core::transport::PeerAddr;
use rpc_core::transport::memory::{self as in_memory, MemoryConnector};
use rpc_core::{Channel, Code, Server, Status};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{Echo, Empty, Fail, Probe, Size, Sleep, TestClient, TestServer, TestService, eventually};
use crate::streams::service::{CountRequest, Item, StreamService, StreamsClient, StreamsServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Unix,
    Memory,
}

/// The test services, served over one transport until shut down.
pub struct Served {
    pub probe: Arc<Probe>,
    target: String,
    connector: Option<MemoryConnector>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<std::io::Result<()>>,
    socket: Option<PathBuf>,
}

impl Served {
    /// A builder for a channel to the server.
    pub fn channel(&self) -> ChannelBuilder {
        let builder = Channel::builder(&self.target);
        match &self.connector {
            Some(connector) => builder.connector(connector.clone()),
            None => builder,
        }
    }

    pub async fn connect(&self) -> Channel {
        self.channel().connect().await.expect("connect")
    }

    /// Starts a graceful shutdown.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down gracefully and waits for the server to return.
    pub async fn shutdown(mut self) {
        self.begin_shutdown();
        (&mut self.handle).await.expect("server task").expect("server result");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(path) = &self.socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Serves the test services over `transport`, with builder options.
pub async fn serve(transport: Transport, configure: impl FnOnce(ServerBuilder) -> ServerBuilder) -> Served {
    let service = TestService::default();
    let probe = Arc::clone(&service.probe);
    let builder = configure(
        Server::builder()
            .add_service(TestServer::new(service))
            .add_service(StreamsServer::new(StreamService::default())),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let signal = async {
        let _ = stopped.await;
    };
    match transport {
        Transport::Tcp => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let target = listener.local_addr().expect("addr").to_string();
            let handle = tokio::spawn(builder.serve_with_listener(listener, signal));
            Served { probe, target, connector: None, stop: Some(stop), handle, socket: None }
        }
        Transport::Unix => {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let path = std::env::temp_dir().join(format!(
                "rpc-test-{}-{}.sock",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let target = format!("unix:{}", path.display());
            // Through the address, as a user would serve it.
            let handle = tokio::spawn(builder.serve_with_shutdown(target.clone(), signal));
            let ready = path.clone();
            eventually("the socket is bound", || ready.exists()).await;
            Served { probe, target, connector: None, stop: Some(stop), handle, socket: Some(path) }
        }
        Transport::Memory => {
            let (listener, connector) = in_memory::channel();
            let handle = tokio::spawn(builder.serve_with_listener(listener, signal));
            Served {
                probe,
                target: "memory:0".into(),
                connector: Some(connector),
                stop: Some(stop),
                handle,
                socket: None,
            }
        }
    }
}

pub async fn unary_calls_carry_messages_metadata_and_statuses(transport: Transport) {
    let served = serve(transport, |b| b).await;
    let client = TestClient::new(served.connect().await);
    let payload = Bytes::from_static(b"over any byte stream");
    let response =
        client.echo(Echo { payload: payload.clone() }).metadata("x-echo", "yes").full().await.expect("echo");
    assert_eq!(response.get_ref().payload, payload);
    assert_eq!(response.metadata().get_str("x-echo"), Some("yes"));
    let status =
        client.fail(Fail { code: Code::NotFound as u32, message: "nope".into() }).await.expect_err("fails");
    assert_eq!((status.code(), status.message()), (Code::NotFound, "nope"));
    assert_eq!(status.metadata().get_str("x-detail"), Some("yes"));
    let status = client.panic(Empty {}).await.expect_err("panics");
    assert_eq!(status.code(), Code::Internal);
    let status = client
        .channel()
        .unary::<Empty, Empty, rpc_core::codec::ProstCodec>("/test.v1.Test/Nope", Empty {})
        .await;
    assert_eq!(status.expect_err("unknown").code(), Code::Unimplemented);
    served.shutdown().await;
}

pub async fn many_calls_share_one_connection(transport: Transport) {
    let served = serve(transport, |b| b).await;
    let client = TestClient::new(served.connect().await);
    let calls = (0..200u64).map(|id| {
        let client = client.clone();
        async move { client.sleep(Sleep { id, millis: 1 }).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    for (id, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.expect("answered").id, id as u64);
    }
    let peers = served.probe.peers.lock().expect("lock").clone();
    assert_eq!(peers.len(), 1, "one connection: {peers:?}");
    let peer = peers.into_iter().next().expect("a peer");
    match transport {
        Transport::Tcp => assert!(matches!(peer, PeerAddr::Tcp(_)), "{peer}"),
        Transport::Unix => assert!(matches!(peer, PeerAddr::Unix(_)), "{peer}"),
        Transport::Memory => assert!(matches!(peer, PeerAddr::Memory(_)), "{peer}"),
    }
    served.shutdown().await;
}

pub async fn deadlines_and_cancellation_stop_the_handler(transport: Transport) {
    let served = serve(transport, |b| b).await;
    let client = TestClient::new(served.connect().await);
    let status = client
        .sleep(Sleep { id: 1, millis: 30_000 })
        .timeout(Duration::from_millis(50))
        .await
        .expect_err("times out");
    assert_eq!(status.code(), Code::DeadlineExceeded);
    eventually("the handler is stopped at the deadline", || served.probe.abandoned() == 1).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 2, millis: 30_000 }).await }
    });
    eventually("the second call runs", || served.probe.started.load(Ordering::SeqCst) == 2).await;
    call.abort();
    eventually("the dropped call's handler is stopped", || served.probe.abandoned() == 2).await;
    client.echo(Echo::default()).await.expect("the connection goes on");
    served.shutdown().await;
}

pub async fn streams_of_every_kind_flow(transport: Transport) {
    let served = serve(transport, |b| b).await;
    let client = StreamsClient::new(served.connect().await);
    // Server streaming, far past the stream and pipe windows: flow control works.
    let mut items = client
        .count(CountRequest { count: 2_000, size: 16 * 1024, ..Default::default() })
        .await
        .expect("open");
    let mut n = 0;
    while let Some(item) = items.message().await.expect("item") {
        assert_eq!(item.n, n);
        n += 1;
    }
    assert_eq!(n, 2_000);
    // Client streaming, with its trailers.
    let (mut requests, response) = client.sum().await.expect("open");
    requests.send_all((0..1_000).map(|n| Item { n, payload: Bytes::new() })).await.expect("sent");
    requests.close();
    let total = response.await.expect("summed");
    assert_eq!((total.count, total.sum), (1_000, 999 * 1_000 / 2));
    // Bidirectional.
    let (mut tx, rx) = client.echo().await.expect("open");
    let sending = tokio::spawn(async move {
        for n in 0..500 {
            tx.send(Item { n, payload: Bytes::from_static(b"ping") }).await?;
        }
        Ok::<_, Status>(())
    });
    let echoed: Vec<u64> = rx.map(|item| item.expect("echoed").n).take(500).collect().await;
    assert_eq!(echoed, (0..500).collect::<Vec<_>>());
    sending.await.expect("task").expect("sent");
    served.shutdown().await;
}

pub async fn a_handler_that_never_yields_does_not_stall_other_calls(transport: Transport) {
    let served = serve(transport, |b| b).await;
    let client = TestClient::new(served.connect().await);
    let spinning = tokio::spawn({
        let client = client.clone();
        async move { client.spin(Empty {}).await }
    });
    // Waited for on this thread, not with the runtime's timers: with one worker computing
    // and the other asleep, nothing would turn Tokio's timer and I/O driver (which is why
    // long computations belong in `spawn_blocking` or `block_in_place`, see the README).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served.probe.started.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the spinning handler did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The spinning handler holds one of the runtime's two workers; every other call of the
    // same connection is served on the other.
    for _ in 0..20 {
        client.echo(Echo { payload: Bytes::from_static(b"still here") }).await.expect("served meanwhile");
    }
    served.probe.release.store(true, Ordering::SeqCst);
    spinning.await.expect("task").expect("the spinning call ends");
    served.shutdown().await;
}

pub async fn a_graceful_shutdown_lets_calls_in_flight_finish(transport: Transport) {
    let mut served = serve(transport, |b| b).await;
    let client = TestClient::new(served.connect().await);
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.sleep(Sleep { id: 7, millis: 200 }).await }
    });
    eventually("the call runs", || served.probe.started.load(Ordering::SeqCst) == 1).await;
    served.begin_shutdown();
    assert_eq!(call.await.expect("task").expect("finished during the drain").id, 7);
    served.shutdown().await;
}

pub async fn limits_apply_whatever_the_transport(transport: Transport) {
    let served = serve(transport, |b| b.max_frame_size(64 * 1024)).await;
    let client = TestClient::new(served.connect().await);
    client.echo(Echo::default()).await.expect("settings exchanged");
    let status =
        client.echo(Echo { payload: Bytes::from(vec![0; 100 * 1024]) }).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let answer = client.big(Size { bytes: 32 * 1024 }).await.expect("within the limit");
    assert_eq!(answer.payload.len(), 32 * 1024);
    served.shutdown().await;
}

/// Runs each scenario over one transport, on a runtime with two workers (a handler that
/// never yields needs the second).
macro_rules! over {
    ($transport:ident: $($scenario:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $scenario() {
                super::$scenario(super::Transport::$transport).await;
            }
        )*
    };
}

macro_rules! every_scenario {
    ($transport:ident) => {
        over!($transport:
            unary_calls_carry_messages_metadata_and_statuses,
            many_calls_share_one_connection,
            deadlines_and_cancellation_stop_the_handler,
            streams_of_every_kind_flow,
            a_handler_that_never_yields_does_not_stall_other_calls,
            a_graceful_shutdown_lets_calls_in_flight_finish,
            limits_apply_whatever_the_transport,
        );
    };
}

mod tcp {
    every_scenario!(Tcp);
}

#[cfg(unix)]
mod unix {
    every_scenario!(Unix);
}

mod memory {
    every_scenario!(Memory);
}
