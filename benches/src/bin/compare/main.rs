//! `compare`: end-to-end latency and throughput of this framework side by side with tonic,
//! tarpc and a raw TCP echo (the floor), in one run.
//!
//! ```text
//! cargo run --release -p benches --bin compare             # the real run: 3 rounds, writes results/
//! cargo run -p benches --bin compare -- --quick            # a smoke run of everything; writes nothing
//! cargo run --release -p benches --bin compare -- --help   # the options
//! ```
//!
//! # What it does
//!
//! For each round, the harness re-executes itself once per stack as `compare serve --stack S
//! --addr 127.0.0.1:0` (a child process that prints the port it bound), connects one client per
//! stack over one TCP connection, and runs every workload, stack after stack, the stacks'
//! order rotated each round: W1 latency (one 64-byte call at a time), W3 large (64 KiB one at
//! a time), the latency-under-load curve (1, 8, 64 and 256 calls in flight; W2 throughput is
//! its 64 point) and W4 streaming (one server stream of 64-byte messages). The children are
//! killed at the end of their round, and on any error or panic.
//!
//! Every process, the harness and each server, runs one Tokio runtime of the same flavour:
//! current-thread by default, one thread per process, so that a call costs each stack's own
//! code path and no cross-thread hand-off inside a process (and, with every process on one
//! CPU, more threads would only take turns); or multi-thread with `--workers N`.
//!
//! By default the harness runs on one CPU and the servers on another (`--pin split`), as a
//! client and a server on two machines would. Left to itself, the scheduler places client
//! and server sometimes on one CPU and sometimes on two, and on some machines (VMs in
//! particular, where waking an idle vCPU is slow) the two placements differ severalfold in
//! per-call latency: an unpinned run flips between them mid-run, and two stacks measured a
//! few seconds apart are then not compared like with like. `--pin one` puts every process on
//! one CPU: the latencies are then those of the stacks' code paths, without cross-CPU
//! wake-ups, and the rates what one core sustains for client and server together.
//! `--pin none` leaves placement to the scheduler.
//!
//! Allocations are counted by a counting global allocator ([`alloc`]) in each process: the
//! client side in the harness, the server side in the child, which reports its counters
//! when asked on its stdin (see [`process`]). They are taken around the measured part of W1
//! and of W2, warm-up excluded.
//!
//! # Output
//!
//! A markdown report (medians of the rounds with [min–max], ratios against tonic and against
//! raw, the machine's facts) on stdout, and, for a full run, `benches/results/latest.md` and
//! `benches/results/load-curve.svg`. A `--quick` run writes no file unless given `--out DIR`,
//! so CI's smoke run never overwrites the committed results; `--out DIR` sends a full run's
//! files elsewhere.

mod alloc;
mod chart;
mod machine;
mod process;
mod report;
mod stacks;
mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::alloc::AllocSnapshot;
use crate::machine::Machine;
use crate::process::ServerProcess;
use crate::report::{Results, Setup};
use crate::stacks::{Client, Stack};
use crate::workload::{IN_FLIGHT, LARGE, SMALL, Sizes, THROUGHPUT_IN_FLIGHT, Workload};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// The harness's error type: anything, with its message.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const HELP: &str = "\
compare: rpc-core side by side with tonic, tarpc and a raw TCP echo (the floor).

USAGE:
    compare [--quick] [--rounds N] [--workers N] [--pin MODE] [--stacks LIST] [--only LIST] [--out DIR]
    compare serve --stack STACK --addr ADDR [--workers N] [--cpu N]

OPTIONS:
    --quick        A tiny run (few calls, one round) that exercises every stack and workload;
                   its figures mean nothing. Writes no file unless --out is given.
    --rounds N     Rounds to run (default 3; 1 with --quick). Figures are medians of the
                   rounds, with [min-max].
    --workers N    Run every process (harness and servers) on a multi-thread Tokio runtime
                   with N workers. Default: a current-thread runtime in every process.
    --pin MODE     Where the processes run: split (default: the harness on the first CPU,
                   the servers on the second, as client and server on two machines), one
                   (every process on the first CPU: no cross-CPU wake-ups), or none
                   (wherever the scheduler puts them). Unpinned, client and server move
                   between sharing a CPU and not, which on a VM changes latencies severalfold
                   in the middle of a run. With one CPU, split falls back to one; if pinning
                   fails, the run goes on unpinned.
    --stacks LIST  Comma-separated subset of rpc-core,tonic,tarpc,raw (default: all).
    --only LIST    Comma-separated subset of the workloads w1,w2,w3,w4,curve (default: all;
                   w2 is the curve's 64 point, run alone), for profiling one of them.
    --out DIR      Write latest.md and load-curve.svg to DIR. Default: benches/results/ for a
                   full run of every stack and workload, nowhere otherwise.
    -h, --help     This text.

    serve          Internal: the server process the harness starts for each stack. Prints
                   `listening ADDR`, then answers `allocs` on stdin; exits when stdin closes.

The report is always printed on stdout; progress goes to stderr.
";

/// A Tokio runtime flavour, the same for the harness and every server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// `new_current_thread`: one thread.
    CurrentThread,
    /// `new_multi_thread` with this many workers.
    MultiThread(usize),
}

impl Flavour {
    /// Builds a runtime of this flavour, with I/O and timers.
    pub(crate) fn runtime(self) -> std::io::Result<Runtime> {
        match self {
            Flavour::CurrentThread => tokio::runtime::Builder::new_current_thread().enable_all().build(),
            Flavour::MultiThread(workers) => {
                tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build()
            }
        }
    }

    /// The command-line arguments that select this flavour.
    pub(crate) fn args(self) -> Vec<String> {
        match self {
            Flavour::CurrentThread => Vec::new(),
            Flavour::MultiThread(workers) => vec!["--workers".to_owned(), workers.to_string()],
        }
    }

    fn describe(self) -> String {
        match self {
            Flavour::CurrentThread => {
                "Tokio current-thread runtime in every process (harness and each server): one thread each"
                    .to_owned()
            }
            Flavour::MultiThread(workers) => {
                format!(
                    "Tokio multi-thread runtime with {workers} worker(s) in every process (harness and each server)"
                )
            }
        }
    }
}

/// Which CPUs the processes are pinned to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Not pinned: the scheduler decides.
    None,
    /// Every process on the first CPU.
    One,
    /// The harness on the first CPU, the servers on the second.
    Split,
}

impl Pin {
    fn parse(text: &str) -> Option<Pin> {
        match text {
            "none" => Some(Pin::None),
            "one" => Some(Pin::One),
            "split" => Some(Pin::Split),
            _ => None,
        }
    }

    /// The CPUs (as the OS numbers them) of the harness and of the servers; `None` unpinned.
    fn cpus(self) -> Result<Option<(usize, usize)>, BoxError> {
        if self == Pin::None {
            return Ok(None);
        }
        let cpus = core_affinity::get_core_ids().ok_or("cannot list the CPUs to pin to")?;
        match (self, cpus.as_slice()) {
            (Pin::Split, [first, second, ..]) => Ok(Some((first.id, second.id))),
            (_, [first, ..]) => Ok(Some((first.id, first.id))),
            (_, []) => Err("no CPU to pin to".into()),
        }
    }

    fn describe(self, cpus: Option<(usize, usize)>) -> String {
        match cpus {
            None if self != Pin::None => "none: pinning failed on this machine".to_owned(),
            None => "none: the scheduler places the processes".to_owned(),
            Some((harness, servers)) if harness == servers => format!("every process on CPU {harness}"),
            Some((harness, servers)) => format!("harness on CPU {harness}, servers on CPU {servers}"),
        }
    }
}

/// Pins the calling thread, and so every thread it starts afterwards, to CPU `cpu`.
pub(crate) fn pin_to(cpu: usize) -> Result<(), BoxError> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(format!("cannot pin to CPU {cpu}").into())
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Compare(Options),
    Serve { stack: Stack, addr: SocketAddr, flavour: Flavour, cpu: Option<usize> },
}

/// The options of a comparison run.
#[derive(Debug, PartialEq)]
struct Options {
    quick: bool,
    rounds: usize,
    flavour: Flavour,
    pin: Pin,
    stacks: Vec<Stack>,
    parts: Parts,
    out: Option<PathBuf>,
}

/// Which workloads a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts {
    w1: bool,
    w2: bool,
    w3: bool,
    w4: bool,
    curve: bool,
}

impl Parts {
    const ALL: Parts = Parts { w1: true, w2: true, w3: true, w4: true, curve: true };

    fn parse(list: &str) -> Result<Parts, String> {
        let mut parts = Parts { w1: false, w2: false, w3: false, w4: false, curve: false };
        for name in list.split(',').map(str::trim) {
            match name {
                "w1" => parts.w1 = true,
                "w2" => parts.w2 = true,
                "w3" => parts.w3 = true,
                "w4" => parts.w4 = true,
                "curve" => parts.curve = true,
                other => return Err(format!("unknown workload {other:?}: w1, w2, w3, w4 or curve")),
            }
        }
        Ok(parts)
    }

    /// The in-flight counts of the load curve to run.
    fn in_flight(self) -> Vec<u64> {
        IN_FLIGHT.into_iter().filter(|&n| self.curve || (self.w2 && n == THROUGHPUT_IN_FLIGHT)).collect()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match parse(&args) {
        Ok(Command::Help) => {
            print!("{HELP}");
            Ok(())
        }
        Ok(Command::Compare(options)) => compare(&options),
        Ok(Command::Serve { stack, addr, flavour, cpu }) => process::serve(stack, addr, flavour, cpu),
        Err(usage) => {
            eprintln!("compare: {usage}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("compare: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments (after the program name). Hand-rolled: a handful of flags do not
/// need a dependency.
fn parse(args: &[String]) -> Result<Command, String> {
    let mut args = args.iter().map(String::as_str);
    let serving = args.clone().next() == Some("serve");
    if serving {
        args.next();
    }
    let (mut quick, mut rounds, mut workers, mut stacks, mut out) = (false, None, None, None, None);
    let mut parts = Parts::ALL;
    let (mut stack, mut addr, mut cpu, mut pin) = (None, None, None, Pin::Split);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg {
            "-h" | "--help" => return Ok(Command::Help),
            "--quick" if !serving => quick = true,
            "--rounds" if !serving => rounds = Some(number(arg, value()?)?),
            "--out" if !serving => out = Some(PathBuf::from(value()?)),
            "--stacks" if !serving => {
                let list = value()?;
                let parsed = list
                    .split(',')
                    .map(|name| Stack::parse(name.trim()).ok_or_else(|| format!("unknown stack {name:?}")))
                    .collect::<Result<Vec<_>, _>>()?;
                // Keep the tables' order, whatever the order given.
                stacks = Some(Stack::ALL.into_iter().filter(|stack| parsed.contains(stack)).collect());
            }
            "--only" if !serving => parts = Parts::parse(value()?)?,
            "--workers" => workers = Some(number(arg, value()?)?),
            "--pin" if !serving => {
                let mode = value()?;
                pin = Pin::parse(mode)
                    .ok_or_else(|| format!("--pin takes none, one or split, not {mode:?}"))?;
            }
            "--cpu" if serving => {
                let text = value()?;
                cpu = Some(text.parse().map_err(|_| format!("bad CPU number {text:?}"))?);
            }
            "--stack" if serving => {
                let name = value()?;
                stack = Some(Stack::parse(name).ok_or_else(|| format!("unknown stack {name:?}"))?);
            }
            "--addr" if serving => {
                let text = value()?;
                addr = Some(text.parse().map_err(|_| format!("bad address {text:?}"))?);
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    let flavour = workers.map_or(Flavour::CurrentThread, Flavour::MultiThread);
    if serving {
        let stack = stack.ok_or("serve needs --stack")?;
        let addr = addr.ok_or("serve needs --addr")?;
        return Ok(Command::Serve { stack, addr, flavour, cpu });
    }
    let rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
    let stacks = stacks.unwrap_or(Stack::ALL.to_vec());
    Ok(Command::Compare(Options { quick, rounds, flavour, pin, stacks, parts, out }))
}

fn number(flag: &str, text: &str) -> Result<usize, String> {
    match text.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a positive number, not {text:?}")),
    }
}

/// One stack of a round: its server process and the harness's client of it.
struct Peer {
    stack: Stack,
    server: ServerProcess,
    client: Client,
}

/// The client side: the runtime the clients run on, and the limit on each measured step.
struct Harness {
    runtime: Runtime,
    limit: Duration,
}

impl Harness {
    /// Runs `task` as a task of the client runtime (on a worker, for a multi-thread one) and
    /// waits for it, at most `self.limit`.
    fn run<T: Send + 'static>(
        &self,
        task: impl Future<Output = Result<T, BoxError>> + Send + 'static,
    ) -> Result<T, BoxError> {
        let limit = self.limit;
        self.runtime.block_on(async move {
            match tokio::time::timeout(limit, tokio::spawn(task)).await {
                Ok(joined) => joined?,
                Err(_) => Err(format!("a step took longer than {limit:?}").into()),
            }
        })
    }
}

fn compare(options: &Options) -> Result<(), BoxError> {
    let sizes = if options.quick { Sizes::QUICK } else { Sizes::FULL };
    // Before pinning, which would hide the other CPUs.
    let machine = Machine::gather();
    // Pinned before the runtime starts its threads, so that they inherit it.
    let pinned = options.pin.cpus().and_then(|cpus| {
        if let Some((harness, _)) = cpus {
            pin_to(harness)?;
        }
        Ok(cpus)
    });
    let cpus = pinned.unwrap_or_else(|error| {
        eprintln!("compare: running unpinned: {error}");
        None
    });
    let harness = Harness {
        runtime: options.flavour.runtime()?,
        limit: if options.quick { Duration::from_secs(120) } else { Duration::from_secs(600) },
    };
    // Only a full run of everything replaces the committed results by default.
    let partial = options.quick || options.parts != Parts::ALL || options.stacks != Stack::ALL;
    let out = options
        .out
        .clone()
        .or_else(|| (!partial).then(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"))));
    let started = Instant::now();
    let mut results = Results::default();
    for round in 0..options.rounds {
        let order = workload::rotated(&options.stacks, round);
        let names: Vec<_> = order.iter().map(|stack| stack.name()).collect();
        eprintln!("round {}/{}: {}", round + 1, options.rounds, names.join(", "));
        let mut peers = Vec::with_capacity(order.len());
        for stack in order {
            let server = ServerProcess::spawn(stack, options.flavour, cpus.map(|(_, servers)| servers))?;
            let client = harness.run(Client::connect(stack, server.addr()))?;
            peers.push(Peer { stack, server, client });
        }
        run_round(&harness, &mut peers, &sizes, options.parts, &mut results)?;
        // Let the clients close their connections before their servers go.
        let servers: Vec<ServerProcess> = {
            let _context = harness.runtime.enter();
            peers.into_iter().map(|peer| peer.server).collect()
        };
        harness.runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        drop(servers);
    }

    let setup = Setup {
        stacks: options.stacks.clone(),
        rounds: options.rounds,
        sizes,
        runtime: options.flavour.describe(),
        pinning: options.pin.describe(cpus),
        quick: options.quick,
        took: started.elapsed(),
    };
    let markdown = report::markdown(&results, &setup, &machine);
    println!("{markdown}");
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        let report = dir.join("latest.md");
        std::fs::write(&report, &markdown)?;
        eprintln!("wrote {}", report.display());
        if options.parts.curve {
            let chart = dir.join(chart::FILE_NAME);
            let subtitle = format!(
                "{}, {}, {}, {} round(s)",
                machine.cpu, machine.profile, setup.pinning, options.rounds
            );
            chart::write(&chart, &results, &options.stacks, &subtitle)?;
            eprintln!("wrote {}", chart.display());
        }
    }
    Ok(())
}

/// One round: every workload, each over every stack in the round's order.
fn run_round(
    harness: &Harness,
    peers: &mut [Peer],
    sizes: &Sizes,
    parts: Parts,
    results: &mut Results,
) -> Result<(), BoxError> {
    let small = payload(SMALL);
    let large = payload(LARGE);

    // W1, with the allocations of its measured calls.
    let (warmup, count) = sizes.latency;
    for peer in peers.iter_mut().filter(|_| parts.w1) {
        harness.run(workload::calls(peer.client.clone(), small.clone(), 1, warmup))?;
        let client = peer.client.clone();
        let measure = || harness.run(workload::calls(client, small.clone(), 1, count));
        let (calls, allocs) = counting_allocs(&mut peer.server, count, measure)?;
        let figures = vec![calls.micros(0.50), calls.micros(0.99), calls.micros(0.999)];
        progress("W1 latency", peer.stack, &format!("p50 {:.1} µs, p99 {:.1} µs", figures[0], figures[1]));
        results.record(Workload::Latency, peer.stack, figures);
        results.record(Workload::AllocsSequential, peer.stack, allocs);
    }

    // W3.
    let (warmup, count) = sizes.large;
    for peer in peers.iter_mut().filter(|_| parts.w3) {
        harness.run(workload::calls(peer.client.clone(), large.clone(), 1, warmup))?;
        let calls = harness.run(workload::calls(peer.client.clone(), large.clone(), 1, count))?;
        let mb_per_s = calls.per_second() * LARGE as f64 / 1e6;
        progress("W3 large", peer.stack, &format!("p50 {:.1} µs, {mb_per_s:.0} MB/s", calls.micros(0.5)));
        results.record(Workload::Large, peer.stack, vec![calls.micros(0.50), calls.micros(0.99), mb_per_s]);
    }

    // The latency-under-load curve; its 64 point is W2, with its allocations.
    let (warmup, count) = sizes.load;
    for in_flight in parts.in_flight() {
        for peer in peers.iter_mut() {
            harness.run(workload::calls(peer.client.clone(), small.clone(), in_flight, warmup))?;
            let client = peer.client.clone();
            let measure = || harness.run(workload::calls(client, small.clone(), in_flight, count));
            let calls = if in_flight == THROUGHPUT_IN_FLIGHT {
                let (calls, allocs) = counting_allocs(&mut peer.server, count, measure)?;
                results.record(Workload::AllocsLoaded, peer.stack, allocs);
                calls
            } else {
                measure()?
            };
            let rate = calls.per_second();
            progress(
                &format!("load {in_flight:>3} in flight"),
                peer.stack,
                &format!(
                    "{} calls/s, p50 {:.1} µs, p99 {:.1} µs",
                    report::thousands(rate),
                    calls.micros(0.5),
                    calls.micros(0.99)
                ),
            );
            results.record(
                Workload::Load(in_flight),
                peer.stack,
                vec![rate, calls.micros(0.50), calls.micros(0.99)],
            );
        }
    }

    // W4.
    let (warmup, count) = sizes.stream;
    for peer in peers.iter_mut().filter(|_| parts.w4) {
        if !peer.stack.streams() {
            progress("W4 streaming", peer.stack, "n/a (no streams)");
            continue;
        }
        harness.run(workload::stream(peer.client.clone(), warmup, SMALL as u64))?;
        if let Some(took) = harness.run(workload::stream(peer.client.clone(), count, SMALL as u64))? {
            let rate = count as f64 / took.as_secs_f64();
            progress("W4 streaming", peer.stack, &format!("{} messages/s", report::thousands(rate)));
            results.record(Workload::Streaming, peer.stack, vec![rate]);
        }
    }
    Ok(())
}

/// Runs `measure` (which makes `calls` calls) between two readings of the client's and the
/// server's allocation counters; returns its result and the allocations per call: client
/// allocations and bytes, server allocations and bytes.
fn counting_allocs<T>(
    server: &mut ServerProcess,
    calls: u64,
    measure: impl FnOnce() -> Result<T, BoxError>,
) -> Result<(T, Vec<f64>), BoxError> {
    let server_before = server.allocs()?;
    let client_before = alloc::snapshot();
    let measured = measure()?;
    let client = alloc::snapshot().since(client_before);
    let server = server.allocs()?.since(server_before);
    let per_call = |snapshot: AllocSnapshot| {
        [snapshot.allocations as f64 / calls as f64, snapshot.bytes as f64 / calls as f64]
    };
    Ok((measured, [per_call(client), per_call(server)].concat()))
}

/// A payload of `size` bytes, already shared so that cloning it never allocates.
fn payload(size: usize) -> Bytes {
    let payload = Bytes::from(vec![0xab; size]);
    // The first clone of a `Bytes` made from a `Vec` moves it to a shared, counted buffer.
    drop(payload.clone());
    payload
}

fn progress(workload: &str, stack: Stack, figures: &str) {
    eprintln!("  {workload:<22} {:<9} {figures}", stack.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn no_arguments_is_a_full_run_of_every_stack() {
        let Ok(Command::Compare(options)) = parse(&[]) else { panic!("a comparison") };
        assert_eq!(
            options,
            Options {
                quick: false,
                rounds: 3,
                flavour: Flavour::CurrentThread,
                pin: Pin::Split,
                stacks: Stack::ALL.to_vec(),
                parts: Parts::ALL,
                out: None,
            }
        );
    }

    #[test]
    fn quick_runs_one_round_and_options_combine() {
        let Ok(Command::Compare(options)) =
            parse(&args("--quick --workers 2 --pin one --stacks raw,rpc-core --out x"))
        else {
            panic!("a comparison")
        };
        assert!(options.quick);
        assert_eq!(options.rounds, 1);
        assert_eq!(options.flavour, Flavour::MultiThread(2));
        assert_eq!(options.pin, Pin::One);
        assert_eq!(options.stacks, [Stack::Rpc, Stack::Raw]);
        assert_eq!(options.out, Some(PathBuf::from("x")));
        let Ok(Command::Compare(options)) = parse(&args("--only w2,w4")) else { panic!("a comparison") };
        assert_eq!(options.parts.in_flight(), [64]);
        assert!(options.parts.w4 && !options.parts.w1 && !options.parts.curve);
    }

    #[test]
    fn serve_takes_a_stack_and_an_address() {
        let command = parse(&args("serve --stack tarpc --addr 127.0.0.1:0 --workers 2 --cpu 1"));
        assert_eq!(
            command,
            Ok(Command::Serve {
                stack: Stack::Tarpc,
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                flavour: Flavour::MultiThread(2),
                cpu: Some(1),
            })
        );
        assert!(parse(&args("serve --stack tarpc")).is_err());
        assert!(parse(&args("serve --quick")).is_err());
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&args("--rounds 0")).is_err());
        assert!(parse(&args("--rounds")).is_err());
        assert!(parse(&args("--stacks grpc")).is_err());
        assert!(parse(&args("--pin both")).is_err());
        assert!(parse(&args("--cpu 1")).is_err());
        assert!(parse(&args("--frobnicate")).is_err());
        assert!(parse(&args("--only w5")).is_err());
        assert_eq!(parse(&args("--quick --help")), Ok(Command::Help));
    }
}
