//! The workloads, their sizes, the client-side loops that measure them, and W5's calibration.
//!
//! Every loop runs as a task of the harness's client runtime and measures with
//! `Instant::now()` around each call; latencies are kept as nanoseconds in preallocated
//! vectors and turned into an HDR histogram only after the timed part.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

use crate::BoxError;
use crate::stacks::{Client, Echo, Stack, Work};

/// The small payload of W1 and W2: 64 bytes.
pub(crate) const SMALL: usize = 64;
/// The large payload of W3: 64 KiB.
pub(crate) const LARGE: usize = 64 * 1024;
/// The calls in flight of the latency-under-load curve; W2 is its 64 point.
pub(crate) const IN_FLIGHT: [u64; 4] = [1, 8, 64, 256];
/// The calls in flight of W2 (throughput), where allocations are also counted.
pub(crate) const THROUGHPUT_IN_FLIGHT: u64 = 64;
/// The calls in flight of W5 (CPU-heavy handler).
pub(crate) const CPU_IN_FLIGHT: u64 = 64;
/// The CPU time W5's handler spends per call, as calibrated in the harness.
pub(crate) const CPU_PER_CALL: Duration = Duration::from_micros(20);

/// A measured workload. The order is the order of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Workload {
    /// W1: one call at a time, 64-byte payload.
    Latency,
    /// Allocations per unary call, one at a time (counted during W1).
    AllocsSequential,
    /// W2 and the latency-under-load curve: this many calls in flight, 64-byte payload.
    Load(u64),
    /// W2 through rpc-core's `echo_spawned` (its handler in a task of its own).
    LoadSpawned,
    /// Allocations per unary call at W2's 64 in flight.
    AllocsLoaded,
    /// W3: one call at a time, 64 KiB payload.
    Large,
    /// W4: one server stream of 64-byte messages.
    Streaming,
    /// W5: a CPU-heavy handler, 64 calls in flight, on the servers of the round.
    Cpu,
    /// W5 on an extra rpc-core server whose runtime has one worker.
    CpuOneWorker,
    /// What a new connection costs: the time from starting to connect to the first call's
    /// answer, and the memory each open connection holds on either side.
    Connection,
}

/// How many calls (or messages) each workload makes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// W1: warm-up calls, then measured calls.
    pub(crate) latency: (u64, u64),
    /// W2 and each point of the curve: warm-up calls, then measured calls.
    pub(crate) load: (u64, u64),
    /// W3: warm-up calls, then measured calls.
    pub(crate) large: (u64, u64),
    /// W4: messages of a warm-up stream, then of the measured stream.
    pub(crate) stream: (u64, u64),
    /// W5: warm-up calls, then measured calls.
    pub(crate) cpu: (u64, u64),
    /// Connection costs: connections opened (and held open together).
    pub(crate) connections: u64,
}

impl Sizes {
    /// The real run's sizes, as the issue sets them.
    pub(crate) const FULL: Sizes = Sizes {
        latency: (2_000, 20_000),
        load: (2_000, 200_000),
        large: (200, 5_000),
        stream: (10_000, 1_000_000),
        cpu: (1_000, 20_000),
        connections: 200,
    };

    /// `--quick`: enough to exercise every stack and workload, fast even in a debug build.
    pub(crate) const QUICK: Sizes = Sizes {
        latency: (20, 200),
        load: (100, 2_000),
        large: (10, 50),
        stream: (1_000, 10_000),
        cpu: (10, 200),
        connections: 20,
    };
}

/// What a run of unary calls measured.
#[derive(Debug)]
pub(crate) struct Calls {
    /// Calls made.
    pub(crate) count: u64,
    /// From the first call's start to the last call's end.
    pub(crate) elapsed: Duration,
    /// Each call's latency.
    pub(crate) latencies: Histogram<u64>,
}

impl Calls {
    /// A latency percentile (`quantile` in 0..=1), in microseconds.
    pub(crate) fn micros(&self, quantile: f64) -> f64 {
        self.latencies.value_at_quantile(quantile) as f64 / 1_000.0
    }

    /// Calls per second.
    pub(crate) fn per_second(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
}

/// Makes `count` echo calls of `payload` with `in_flight` callers, each with its own clone
/// of `client`, each making its next call as soon as its last one returns.
pub(crate) async fn calls(
    client: Client,
    payload: Bytes,
    in_flight: u64,
    count: u64,
) -> Result<Calls, BoxError> {
    match client {
        Client::Rpc(client) => calls_of(EchoCall { client, payload }, in_flight, count).await,
        Client::Tonic(client) => calls_of(EchoCall { client, payload }, in_flight, count).await,
        Client::Tarpc(client) => calls_of(EchoCall { client, payload }, in_flight, count).await,
        Client::Raw(client) => calls_of(EchoCall { client, payload }, in_flight, count).await,
    }
}

/// [`calls`] through rpc-core's `echo_spawned`; `None` for another stack.
pub(crate) async fn spawned_calls(
    client: Client,
    payload: Bytes,
    in_flight: u64,
    count: u64,
) -> Result<Option<Calls>, BoxError> {
    match client.spawned() {
        Some(client) => Ok(Some(calls_of(EchoCall { client, payload }, in_flight, count).await?)),
        None => Ok(None),
    }
}

/// W5's request, and the digest that must come back.
#[derive(Debug, Clone)]
pub(crate) struct WorkOrder {
    /// The bytes to hash.
    pub(crate) payload: Bytes,
    /// How many times.
    pub(crate) iterations: u64,
    /// `benches::work_digest(payload, iterations)`.
    pub(crate) digest: u64,
}

impl WorkOrder {
    /// The order for `iterations` rounds over `payload`; computes the digest to expect.
    pub(crate) fn new(payload: Bytes, iterations: u64) -> WorkOrder {
        let digest = benches::work_digest(&payload, iterations);
        WorkOrder { payload, iterations, digest }
    }
}

/// Makes `count` `work` calls of `order`, as [`calls`] makes echo calls; `None` for a stack
/// without `work`.
pub(crate) async fn work_calls(
    client: Client,
    order: WorkOrder,
    in_flight: u64,
    count: u64,
) -> Result<Option<Calls>, BoxError> {
    let calls = match client {
        Client::Rpc(client) => calls_of(WorkCall { client, order }, in_flight, count).await?,
        Client::Tonic(client) => calls_of(WorkCall { client, order }, in_flight, count).await?,
        Client::Tarpc(client) => calls_of(WorkCall { client, order }, in_flight, count).await?,
        Client::Raw(_) => return Ok(None),
    };
    Ok(Some(calls))
}

/// One kind of call of one stack's client: makes it, and checks what came back.
trait Call: Clone + Send + 'static {
    /// Makes the call.
    fn call(&mut self) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
}

/// An echo of `payload`.
#[derive(Clone)]
struct EchoCall<E> {
    client: E,
    payload: Bytes,
}

impl<E: Echo> Call for EchoCall<E> {
    async fn call(&mut self) -> Result<(), BoxError> {
        let echoed = self.client.echo(self.payload.clone()).await?;
        if echoed.len() != self.payload.len() {
            return Err(format!("echo returned {} bytes for {}", echoed.len(), self.payload.len()).into());
        }
        Ok(())
    }
}

/// A `work` call of `order`.
#[derive(Clone)]
struct WorkCall<W> {
    client: W,
    order: WorkOrder,
}

impl<W: Work> Call for WorkCall<W> {
    async fn call(&mut self) -> Result<(), BoxError> {
        let digest = self.client.work(self.order.payload.clone(), self.order.iterations).await?;
        if digest != self.order.digest {
            return Err(format!("work returned digest {digest:#x}, expected {:#x}", self.order.digest).into());
        }
        Ok(())
    }
}

/// Makes `count` calls with `in_flight` callers, each with its own clone of `call`: compiled
/// for each stack's client and kind of call.
async fn calls_of<C: Call>(call: C, in_flight: u64, count: u64) -> Result<Calls, BoxError> {
    let next = Arc::new(AtomicU64::new(0));
    // Room for each caller's share and then some, so that recording never reallocates.
    let capacity = count.min(2 * count / in_flight + 1_024) as usize;
    let started = Instant::now();
    let callers: Vec<_> = (0..in_flight)
        .map(|_| {
            let (mut call, next) = (call.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(capacity);
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let start = Instant::now();
                    call.call().await?;
                    latencies.push(start.elapsed().as_nanos() as u64);
                }
                Ok::<_, BoxError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(in_flight as usize);
    for caller in callers {
        latencies.push(caller.await??);
    }
    let elapsed = started.elapsed();
    Ok(Calls { count, elapsed, latencies: histogram(latencies.iter().flatten().copied())? })
}

/// W5's calibration: how many rounds of [`benches::work_digest`] over the payload take
/// [`CPU_PER_CALL`] on this machine, in this build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Calibration {
    /// The rounds each W5 request asks for.
    pub(crate) iterations: u64,
    /// What one round took, in nanoseconds: the fastest of several timings.
    pub(crate) nanos_per_iteration: f64,
}

/// Times [`benches::work_digest`] over `payload` here, in the calling thread, and chooses the
/// rounds for [`CPU_PER_CALL`]. Each timing is of a batch of rounds long enough for the clock
/// (some 100 µs in a release build); the fastest of a few is taken, as the one the machine's
/// noise disturbed least.
pub(crate) fn calibrate(payload: &[u8]) -> Calibration {
    const BATCH: u64 = 1_000;
    const TIMINGS: usize = 9;
    let mut fastest = f64::INFINITY;
    for _ in 0..TIMINGS {
        let start = Instant::now();
        std::hint::black_box(benches::work_digest(std::hint::black_box(payload), BATCH));
        fastest = fastest.min(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    Calibration { iterations: iterations_for(CPU_PER_CALL, fastest), nanos_per_iteration: fastest }
}

/// The rounds that take `target` at `nanos_per_iteration` each, rounded, at least 1 and at
/// most what a server accepts.
pub(crate) fn iterations_for(target: Duration, nanos_per_iteration: f64) -> u64 {
    let rounds = (target.as_nanos() as f64 / nanos_per_iteration).round();
    // `as` saturates: an infinite count (a round too fast to time) becomes u64::MAX, NaN 0.
    (rounds as u64).clamp(1, benches::MAX_WORK_ITERATIONS)
}

/// What opening connections measured.
pub(crate) struct Connections {
    /// Each connection's time from starting to connect to its first call's answer.
    pub(crate) latencies: Histogram<u64>,
    /// The clients, each on a connection of its own, still open.
    pub(crate) clients: Vec<Client>,
}

/// Opens `count` connections to `stack`'s server at `addr`, one after the other, each with
/// one echo call of `payload` (so that both sides have finished setting it up), and keeps
/// them open.
pub(crate) async fn connections(
    stack: Stack,
    addr: std::net::SocketAddr,
    payload: Bytes,
    count: u64,
) -> Result<Connections, BoxError> {
    let mut clients = Vec::with_capacity(count as usize);
    let mut nanos = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let start = Instant::now();
        let client = Client::connect(stack, addr).await?;
        calls(client.clone(), payload.clone(), 1, 1).await?;
        nanos.push(start.elapsed().as_nanos() as u64);
        clients.push(client);
    }
    Ok(Connections { latencies: histogram(nanos.into_iter())?, clients })
}

/// Reads one server stream of `count` messages of `size` bytes; how long it took, from
/// opening the call to its end. `None` for a stack without streams.
pub(crate) async fn stream(mut client: Client, count: u64, size: u64) -> Result<Option<Duration>, BoxError> {
    let started = Instant::now();
    Ok(client.stream(count, size).await?.map(|()| started.elapsed()))
}

/// A histogram of latencies in nanoseconds, three significant figures, up to a minute.
fn histogram(nanos: impl Iterator<Item = u64>) -> Result<Histogram<u64>, BoxError> {
    let mut histogram = Histogram::new_with_max(60_000_000_000, 3)?;
    for value in nanos {
        histogram.saturating_record(value);
    }
    Ok(histogram)
}

/// The stacks in the order of round `round`: rotated by one each round, so that no stack
/// always goes first (or always runs right after the same neighbour).
pub(crate) fn rotated(stacks: &[Stack], round: usize) -> Vec<Stack> {
    let mut order = stacks.to_vec();
    if !order.is_empty() {
        let by = round % order.len();
        order.rotate_left(by);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_starts_with_the_next_stack() {
        let all = Stack::ALL;
        assert_eq!(rotated(&all, 0), all.to_vec());
        assert_eq!(rotated(&all, 1)[0], Stack::Tonic);
        assert_eq!(rotated(&all, all.len()), all.to_vec());
        assert!(rotated(&[], 3).is_empty());
    }

    #[test]
    fn calibration_divides_the_target_by_the_cost_of_a_round() {
        let target = Duration::from_micros(20);
        assert_eq!(iterations_for(target, 100.0), 200);
        assert_eq!(iterations_for(target, 30.0), 667);
        assert_eq!(iterations_for(target, 1e9), 1);
        assert_eq!(iterations_for(target, 0.0), benches::MAX_WORK_ITERATIONS);
        assert_eq!(iterations_for(target, f64::NAN), 1);
    }

    #[test]
    fn a_calibrated_order_expects_the_digest_of_its_rounds() {
        let calibration = calibrate(&[0xab; SMALL]);
        assert!(calibration.iterations >= 1);
        assert!(calibration.nanos_per_iteration > 0.0);
        let order = WorkOrder::new(Bytes::from(vec![0xab; SMALL]), calibration.iterations);
        assert_eq!(order.digest, benches::work_digest(&[0xab; SMALL], calibration.iterations));
    }

    #[test]
    fn percentiles_come_out_in_microseconds() {
        let latencies = histogram((1..=100).map(|us| us * 1_000)).expect("histogram");
        let calls = Calls { count: 100, elapsed: Duration::from_secs(1), latencies };
        assert!((calls.micros(0.5) - 50.0).abs() < 0.1, "{}", calls.micros(0.5));
        assert!((calls.per_second() - 100.0).abs() < 1e-9);
    }
}
