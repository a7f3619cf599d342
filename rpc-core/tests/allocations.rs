//! Heap allocations of a unary call on the client, counted by a counting allocator: one per
//! call in the steady state, whether calls come one at a time or many at once.
//!
//! A test binary of its own, for its global allocator. The server runs on a thread of its
//! own; only the client's thread (where its calls and its connection's driver run, on a
//! current-thread runtime) is counted.

// Implementing `GlobalAlloc` takes `unsafe`; each function only forwards to `System`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use rpc_core::{Channel, Server, ServerContext, Status};
use tokio::net::TcpListener;

/// Counts the allocations (and reallocations) of the threads that ask for it.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator runs while thread-locals are torn down, too.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|count| count.set(count.get() + 1));
        }
    });
}

// SAFETY: every call is passed to the system allocator unchanged; the counting touches only
// const-initialised thread-locals, which do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made on this thread while `f` runs.
async fn counted<T>(f: impl Future<Output = T>) -> (T, u64) {
    COUNT.with(|count| count.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f.await;
    COUNTING.with(|on| on.set(false));
    (out, COUNT.with(Cell::get))
}

/// Bytes there and back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// The bytes.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

/// Answers what it is sent.
#[rpc_core::service(package = "alloc.v1")]
pub trait Echo {
    /// Returns the payload.
    async fn echo(&self, ctx: &mut ServerContext, request: Payload) -> Result<Payload, Status>;
}

struct EchoService;

impl Echo for EchoService {
    async fn echo(&self, _ctx: &mut ServerContext, request: Payload) -> Result<Payload, Status> {
        Ok(request)
    }
}

const WARM_UP: u64 = 500;
const CALLS: u64 = 4_000;

/// A client on a current-thread runtime, calling a server on a thread of its own.
fn client(body: impl AsyncFnOnce(EchoClient) + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let server = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let serving = Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_listener(listener, std::future::pending());
        server.block_on(serving).expect("serve");
    });
    runtime.block_on(async move {
        let client = EchoClient::new(Channel::connect(addr).await.expect("connect"));
        body(client).await;
    });
}

/// Fails unless `allocations` over `CALLS` calls is at most one per call, give or take the
/// connection's read buffer: answers are slices of it, so while some are alive a full buffer is
/// replaced by a new one (two allocations per buffer of up to 64 KiB, about one per hundred
/// calls here); one per few KiB read (a few per hundred calls) would fail.
fn assert_one_per_call(allocations: u64) {
    assert!(
        allocations <= CALLS + CALLS / 50,
        "{allocations} allocations for {CALLS} calls: {:.3} per call",
        allocations as f64 / CALLS as f64
    );
}

#[test]
fn one_call_at_a_time_allocates_once_per_call() {
    client(async |client| {
        let payload = Payload { data: Bytes::from_static(&[7; 64]) };
        for _ in 0..WARM_UP {
            client.echo(payload.clone()).await.expect("echo");
        }
        let ((), allocations) = counted(async {
            for _ in 0..CALLS {
                let answer = client.echo(payload.clone()).await.expect("echo");
                assert_eq!(answer.data.len(), 64);
            }
        })
        .await;
        assert_one_per_call(allocations);
    });
}

#[test]
fn calls_in_flight_together_allocate_once_per_call() {
    client(async |client| {
        let payload = Payload { data: Bytes::from_static(&[7; 64]) };
        // 64 loops of calls one after another, together: 64 in flight, as the benchmark's W2.
        let run = async |calls: u64| {
            let calls = &(calls / 64);
            let loops = (0..64).map(|_| async {
                for _ in 0..*calls {
                    let answer = client.echo(payload.clone()).await.expect("echo");
                    assert_eq!(answer.data.len(), 64);
                }
            });
            futures_util::future::join_all(loops).await;
        };
        run(WARM_UP).await;
        // What running 64 loops together costs by itself, whatever they do.
        let ((), overhead) = counted(run(0)).await;
        let ((), allocations) = counted(run(CALLS)).await;
        assert_one_per_call(allocations - overhead);
    });
}
