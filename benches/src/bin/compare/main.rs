//! `compare`: end-to-end latency and throughput of this framework side by side with tonic,
//! tarpc and a raw TCP echo (the floor), in one run.
//!
//! ```text
//! cargo run --release -p benches --bin compare             # the real run: 3 rounds, writes results/
//! cargo run --release -p benches --bin compare -- --current-thread --pin split
//!                                                          # another configuration (see below)
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
//! its 64 point), W4 streaming (a server stream of 64-byte messages, five in a row, the median kept) and W5 CPU-heavy
//! handler (64 calls in flight, each keeping the server's CPU busy some 20 µs), and the cost
//! of a connection (rpc-core and tonic: the time from starting to connect to a first answer,
//! and the memory an open connection holds in client and server). rpc-core and tonic also
//! run over TLS 1.3 (`rpc-core+tls`, `tonic+tls`: each with its own rustls support, ring
//! provider, a certificate the harness makes at startup) for W1, W2, W3 and the connection
//! costs. The children are killed at the end of their round, and on any error or panic.
//!
//! rpc-core's `echo`, which W1 to W3 and the curve call, is marked `#[rpc(inline)]`: a handler
//! that never waits is answered on the connection's task. W2 is also measured through its
//! `echo_spawned`, the same echo as an ordinary handler (a task of its own per call, the
//! default), reported as the row *rpc-core (handlers spawned)*.
//!
//! # Configuration
//!
//! By default every process, the harness and each server, runs what `#[tokio::main]` gives:
//! a multi-thread Tokio runtime with the default number of workers (the CPUs available,
//! [`std::thread::available_parallelism`]), and none is pinned: what users run. Those results
//! are `results/latest.md` and `results/load-curve.svg`.
//!
//! Other configurations are a flag away. `--current-thread` gives every process a
//! current-thread runtime: a call then costs each stack's own code path, with no cross-thread
//! hand-off inside a process. `--workers N` gives every process N workers. `--pin split` runs
//! the harness on one CPU and the servers on another, as a client and a server on two
//! machines would: left to itself, the scheduler places client and server sometimes on one
//! CPU and sometimes on two, and on some machines (VMs in particular, where waking an idle
//! vCPU is slow) the two placements differ severalfold in per-call latency, so an unpinned
//! run can flip between them mid-run. `--pin one` puts every process on one CPU: the
//! latencies are those of the stacks' code paths, without cross-CPU wake-ups. The report
//! says which configuration it ran, and a full run in any configuration but the default
//! writes its files under names that say it (`--current-thread --pin split` writes
//! `latest-current-thread-pinned.md` and `load-curve-current-thread-pinned.svg`), so that it
//! never overwrites the default's.
//!
//! # W5
//!
//! W5's handler hashes the 64-byte payload `iterations` times ([`benches::work_digest`]:
//! FNV-1a 64, read through `black_box`) and answers the digest, which the client checks.
//! The harness calibrates `iterations` once at startup, in its own process, before its
//! runtime starts: it times batches of rounds, takes the fastest, and asks for the rounds
//! that take 20 µs ([`workload::calibrate`]); it prints the figure, and the report gives it.
//! W5 runs on rpc-core (its `work` an ordinary, spawned handler), tonic and tarpc on the
//! round's servers, and on an extra rpc-core server with a one-worker multi-thread runtime
//! (`compare serve --workers 1`), started for the measurement and stopped after it: the
//! report gives rpc-core's calls/s on the servers' runtime over those on one worker.
//!
//! Allocations are counted by a counting global allocator ([`alloc`]) in each process: the
//! client side in the harness, the server side in the child, which reports its counters
//! when asked on its stdin (see [`process`]). They are taken around the measured part of W1
//! and of W2, warm-up excluded.
//!
//! # Output
//!
//! A markdown report (medians of the rounds with [min–max], ratios against tonic and against
//! raw, the configuration, the machine's facts) on stdout, and, for a full run,
//! `benches/results/latest.md` and `benches/results/load-curve.svg` (named after the
//! configuration when it is not the default). A `--quick` run writes no file unless given
//! `--out DIR`, so CI's smoke run never overwrites the committed results; `--out DIR` sends a
//! full run's files elsewhere.

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
use crate::workload::{
    CPU_IN_FLIGHT, IN_FLIGHT, LARGE, SMALL, Sizes, THROUGHPUT_IN_FLIGHT, WorkOrder, Workload,
};

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// The harness's error type: anything, with its message.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

const HELP: &str = "\
compare: rpc-core side by side with tonic, tarpc and a raw TCP echo (the floor).

USAGE:
    compare [--quick] [--rounds N] [--current-thread | --workers N] [--pin MODE]
            [--stacks LIST] [--only LIST] [--out DIR]
    compare serve --stack STACK --addr ADDR [--current-thread | --workers N] [--cpu N]

CONFIGURATION:
    The default is what users run with #[tokio::main]: every process (the harness and each
    server) on a multi-thread Tokio runtime with the default number of workers (the CPUs
    available), unpinned. A full run of it writes results/latest.md and load-curve.svg; a
    full run in any other configuration writes files named after it, e.g.
    latest-current-thread-pinned.md and load-curve-current-thread-pinned.svg for
    --current-thread --pin split, and never overwrites the default's.

OPTIONS:
    --quick            A tiny run (few calls, one round) that exercises every stack and
                       workload; its figures mean nothing. Writes no file unless --out is given.
    --rounds N         Rounds to run (default 3; 1 with --quick). Figures are medians of the
                       rounds, with [min-max].
    --current-thread   Run every process on a current-thread Tokio runtime: one thread each.
    --workers N        Run every process on a multi-thread Tokio runtime with N workers.
                       Default: a multi-thread runtime with one worker per CPU available.
    --pin MODE         Where the processes run: none (default: wherever the scheduler puts
                       them), split (the harness on the first CPU, the servers on the second,
                       as client and server on two machines), or one (every process on the
                       first CPU: no cross-CPU wake-ups). Unpinned, client and server move
                       between sharing a CPU and not, which on a VM can change latencies
                       severalfold in the middle of a run. With one CPU, split falls back to
                       one; if pinning fails, the run goes on unpinned.
    --stacks LIST      Comma-separated subset of rpc-core,tonic,tarpc,raw,rpc-core+tls,tonic+tls
                       (default: all).
    --only LIST        Comma-separated subset of the workloads w1,w2,w3,w4,w5,curve,conn
                       (default: all; w2 is the curve's 64 point, run alone), for profiling one
                       of them.
    --out DIR          Write the report and the chart to DIR. Default: benches/results/ for a
                       full run of every stack and workload, nowhere otherwise.
    -h, --help         This text.

    serve              Internal: the server process the harness starts for each stack (and an
                       extra rpc-core one with --workers 1 for W5). Prints `listening ADDR`,
                       then answers `allocs` on stdin; exits when stdin closes.

WORKLOADS:
    w1 one 64-byte call at a time; w2 64 calls in flight (rpc-core also through its spawned,
    not inline, echo handler); w3 one 64 KiB call at a time; w4 one server stream of 64-byte
    messages; w5 a CPU-heavy handler (~20 us of hashing per call, calibrated at startup and
    printed) with 64 calls in flight, rpc-core also on a one-worker server; curve 1, 8, 64 and
    256 calls in flight; conn what a new connection costs (time to its first answer, memory
    held per open connection) for rpc-core and tonic. rpc-core+tls and tonic+tls (each over
    its own rustls, TLS 1.3) run w1, w2, w3 and conn.

The report is always printed on stdout; progress goes to stderr.
";

/// A Tokio runtime flavour, resolved: the runtime a process builds.
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
            Flavour::CurrentThread => vec!["--current-thread".to_owned()],
            Flavour::MultiThread(workers) => vec!["--workers".to_owned(), workers.to_string()],
        }
    }

    /// In a few words: `multi-thread, 2 workers`.
    fn short(self) -> String {
        match self {
            Flavour::CurrentThread => "current-thread".to_owned(),
            Flavour::MultiThread(1) => "multi-thread, 1 worker".to_owned(),
            Flavour::MultiThread(workers) => format!("multi-thread, {workers} workers"),
        }
    }
}

/// The runtime the command line asks for, in every process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Threads {
    /// A multi-thread runtime with the default number of workers, as `#[tokio::main]`.
    Default,
    /// `--current-thread`.
    CurrentThread,
    /// `--workers N`: a multi-thread runtime with N workers.
    Workers(usize),
}

impl Threads {
    /// The flavour, given the default number of workers (the CPUs available).
    fn flavour(self, default_workers: usize) -> Flavour {
        match self {
            Threads::Default => Flavour::MultiThread(default_workers),
            Threads::CurrentThread => Flavour::CurrentThread,
            Threads::Workers(workers) => Flavour::MultiThread(workers),
        }
    }
}

/// The CPUs available to this process (before it pins itself): Tokio's default number of
/// workers.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
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

/// A run's configuration: the runtime of every process, and where the processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    threads: Threads,
    pin: Pin,
}

impl Config {
    /// The default: what `#[tokio::main]` gives, unpinned.
    const DEFAULT: Config = Config { threads: Threads::Default, pin: Pin::None };

    /// The flags that select this configuration; empty for the default.
    fn flags(self) -> String {
        let threads = match self.threads {
            Threads::Default => None,
            Threads::CurrentThread => Some("--current-thread".to_owned()),
            Threads::Workers(workers) => Some(format!("--workers {workers}")),
        };
        let pin = match self.pin {
            Pin::None => None,
            Pin::One => Some("--pin one".to_owned()),
            Pin::Split => Some("--pin split".to_owned()),
        };
        [threads, pin].into_iter().flatten().collect::<Vec<_>>().join(" ")
    }

    /// What names this configuration's files: `None` for the default, else its flags in a
    /// word (`current-thread-pinned` for `--current-thread --pin split`).
    fn slug(self) -> Option<String> {
        let threads = match self.threads {
            Threads::Default => None,
            Threads::CurrentThread => Some("current-thread".to_owned()),
            Threads::Workers(workers) => Some(format!("workers-{workers}")),
        };
        let pin = match self.pin {
            Pin::None => None,
            Pin::One => Some("one-cpu".to_owned()),
            Pin::Split => Some("pinned".to_owned()),
        };
        let parts: Vec<_> = [threads, pin].into_iter().flatten().collect();
        (!parts.is_empty()).then(|| parts.join("-"))
    }

    /// The report's and the chart's file names.
    fn file_names(self) -> (String, String) {
        match self.slug() {
            None => ("latest.md".to_owned(), chart::FILE_NAME.to_owned()),
            Some(slug) => (format!("latest-{slug}.md"), format!("{}-{slug}.svg", chart::FILE_STEM)),
        }
    }

    /// This configuration in a few words, for the report.
    fn describe(self) -> String {
        if self == Config::DEFAULT {
            "the default: multi-thread runtime with the default number of workers, unpinned, as with \
             `#[tokio::main]`"
                .to_owned()
        } else {
            format!("`{}`", self.flags())
        }
    }

    /// The runtime of every process, described, given the default number of workers.
    fn runtime(self, default_workers: usize) -> String {
        match self.threads {
            Threads::Default => format!(
                "Tokio multi-thread runtime with the default number of workers ({default_workers}: the \
                 CPUs available) in every process (harness and each server)"
            ),
            Threads::CurrentThread => {
                "Tokio current-thread runtime in every process (harness and each server): one thread each"
                    .to_owned()
            }
            Threads::Workers(workers) => format!(
                "Tokio multi-thread runtime with {workers} worker(s) (`--workers {workers}`) in every \
                 process (harness and each server)"
            ),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq)]
enum Command {
    Help,
    Compare(Options),
    Serve { stack: Stack, addr: SocketAddr, threads: Threads, cpu: Option<usize> },
}

/// The options of a comparison run.
#[derive(Debug, PartialEq)]
struct Options {
    quick: bool,
    rounds: usize,
    config: Config,
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
    w5: bool,
    curve: bool,
    conn: bool,
}

impl Parts {
    const ALL: Parts = Parts { w1: true, w2: true, w3: true, w4: true, w5: true, curve: true, conn: true };

    fn parse(list: &str) -> Result<Parts, String> {
        let mut parts =
            Parts { w1: false, w2: false, w3: false, w4: false, w5: false, curve: false, conn: false };
        for name in list.split(',').map(str::trim) {
            match name {
                "w1" => parts.w1 = true,
                "w2" => parts.w2 = true,
                "w3" => parts.w3 = true,
                "w4" => parts.w4 = true,
                "w5" => parts.w5 = true,
                "curve" => parts.curve = true,
                "conn" => parts.conn = true,
                other => {
                    return Err(format!("unknown workload {other:?}: w1, w2, w3, w4, w5, curve or conn"));
                }
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
        Ok(Command::Compare(options)) => compare(&options, &args),
        Ok(Command::Serve { stack, addr, threads, cpu }) => {
            // Before pinning, which would hide the other CPUs.
            process::serve(stack, addr, threads.flavour(default_workers()), cpu)
        }
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
    let (mut current_thread, mut parts) = (false, Parts::ALL);
    let (mut stack, mut addr, mut cpu, mut pin) = (None, None, None, Pin::None);
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
            "--current-thread" => current_thread = true,
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
    let threads = match (current_thread, workers) {
        (true, Some(_)) => return Err("--current-thread and --workers exclude each other".to_owned()),
        (true, None) => Threads::CurrentThread,
        (false, Some(workers)) => Threads::Workers(workers),
        (false, None) => Threads::Default,
    };
    if serving {
        let stack = stack.ok_or("serve needs --stack")?;
        let addr = addr.ok_or("serve needs --addr")?;
        return Ok(Command::Serve { stack, addr, threads, cpu });
    }
    let rounds = rounds.unwrap_or(if quick { 1 } else { 3 });
    let stacks = stacks.unwrap_or(Stack::ALL.to_vec());
    Ok(Command::Compare(Options { quick, rounds, config: Config { threads, pin }, stacks, parts, out }))
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

    /// Closes the clients' connections, gives them a moment to go, then stops the servers.
    fn shut_down(&self, clients: Vec<Client>, servers: Vec<ServerProcess>) {
        {
            let _context = self.runtime.enter();
            drop(clients);
        }
        self.runtime.block_on(async { tokio::time::sleep(Duration::from_millis(50)).await });
        drop(servers);
    }
}

/// What each round runs, and how.
struct Plan {
    sizes: Sizes,
    parts: Parts,
    /// The servers' runtime.
    flavour: Flavour,
    /// The CPU the servers are pinned to, if they are.
    server_cpu: Option<usize>,
    /// W5's request, calibrated, if W5 runs.
    work: Option<WorkOrder>,
}

fn compare(options: &Options, args: &[String]) -> Result<(), BoxError> {
    let sizes = if options.quick { Sizes::QUICK } else { Sizes::FULL };
    // Before pinning, which would hide the other CPUs.
    let machine = Machine::gather();
    let flavour = options.config.threads.flavour(machine.cores);
    // Pinned before the runtime starts its threads, so that they inherit it.
    let pinned = options.config.pin.cpus().and_then(|cpus| {
        if let Some((harness, _)) = cpus {
            pin_to(harness)?;
        }
        Ok(cpus)
    });
    let cpus = pinned.unwrap_or_else(|error| {
        eprintln!("compare: running unpinned: {error}");
        None
    });
    // In this thread, alone in the process: the runtime has not started yet.
    let calibration = options.parts.w5.then(|| workload::calibrate(&payload(SMALL)));
    if let Some(calibration) = calibration {
        eprintln!(
            "W5 calibration: {} rounds of FNV-1a 64 over {SMALL} bytes per call, {:.1} ns a round: {:.1} µs",
            calibration.iterations,
            calibration.nanos_per_iteration,
            calibration.iterations as f64 * calibration.nanos_per_iteration / 1_000.0
        );
    }
    let harness = Harness {
        runtime: flavour.runtime()?,
        limit: if options.quick { Duration::from_secs(120) } else { Duration::from_secs(600) },
    };
    let plan = Plan {
        sizes,
        parts: options.parts,
        flavour,
        server_cpu: cpus.map(|(_, servers)| servers),
        work: calibration.map(|calibration| WorkOrder::new(payload(SMALL), calibration.iterations)),
    };
    // Only a full run of everything replaces the committed results by default.
    let partial = options.quick || options.parts != Parts::ALL || options.stacks != Stack::ALL;
    let out = options
        .out
        .clone()
        .or_else(|| (!partial).then(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/results"))));
    let (report_name, chart_name) = options.config.file_names();
    eprintln!("configuration: {}; {}", options.config.describe(), options.config.runtime(machine.cores));
    let started = Instant::now();
    let mut results = Results::default();
    for round in 0..options.rounds {
        let order = workload::rotated(&options.stacks, round);
        let names: Vec<_> = order.iter().map(|stack| stack.name()).collect();
        eprintln!("round {}/{}: {}", round + 1, options.rounds, names.join(", "));
        let mut peers = Vec::with_capacity(order.len());
        for stack in order {
            let server = ServerProcess::spawn(stack, flavour, plan.server_cpu)?;
            let client = harness.run(Client::connect(stack, server.addr()))?;
            peers.push(Peer { stack, server, client });
        }
        run_round(&harness, &mut peers, &plan, &mut results)?;
        let (clients, servers) = peers.into_iter().map(|peer| (peer.client, peer.server)).unzip();
        harness.shut_down(clients, servers);
    }

    let release = if cfg!(debug_assertions) { "" } else { " --release" };
    let flags = if args.is_empty() { String::new() } else { format!(" -- {}", args.join(" ")) };
    let setup = Setup {
        stacks: options.stacks.clone(),
        rounds: options.rounds,
        sizes,
        configuration: options.config.describe(),
        default_configuration: options.config == Config::DEFAULT,
        command: format!("cargo run{release} -p benches --bin compare{flags}"),
        runtime: options.config.runtime(machine.cores),
        server_runtime: flavour.short(),
        pinning: options.config.pin.describe(cpus),
        chart: chart_name.clone(),
        calibration,
        quick: options.quick,
        took: started.elapsed(),
    };
    let markdown = report::markdown(&results, &setup, &machine);
    println!("{markdown}");
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir)?;
        let report = dir.join(&report_name);
        std::fs::write(&report, &markdown)?;
        eprintln!("wrote {}", report.display());
        if options.parts.curve {
            let chart = dir.join(&chart_name);
            let subtitle = format!(
                "{}, {}, {}, {}, {} round(s)",
                machine.cpu,
                machine.profile,
                flavour.short(),
                setup.pinning,
                options.rounds
            );
            let plain: Vec<Stack> = options.stacks.iter().copied().filter(|stack| !stack.is_tls()).collect();
            chart::write(&chart, &results, &plain, &subtitle)?;
            eprintln!("wrote {}", chart.display());
        }
    }
    Ok(())
}

/// One round: every workload, each over every stack in the round's order.
fn run_round(
    harness: &Harness,
    peers: &mut [Peer],
    plan: &Plan,
    results: &mut Results,
) -> Result<(), BoxError> {
    let (sizes, parts) = (&plan.sizes, plan.parts);
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

    // Connection costs.
    for peer in peers.iter_mut().filter(|peer| parts.conn && peer.stack.measures_connections()) {
        let figures = connection_costs(harness, peer, sizes.connections)?;
        progress(
            "new connection to first answer",
            peer.stack,
            &format!(
                "p50 {:.0} µs; {:.1} KiB client, {:.1} KiB server per connection",
                figures[0], figures[2], figures[3]
            ),
        );
        results.record(Workload::Connection, peer.stack, figures);
    }

    // The latency-under-load curve; its 64 point is W2, with its allocations, and for
    // rpc-core also through `echo_spawned`.
    let (warmup, count) = sizes.load;
    for in_flight in parts.in_flight() {
        // The TLS stacks run W2, the 64 point, only.
        for peer in peers.iter_mut().filter(|peer| !peer.stack.is_tls() || in_flight == THROUGHPUT_IN_FLIGHT)
        {
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
            let label = format!("load {in_flight:>3} in flight");
            results.record(Workload::Load(in_flight), peer.stack, rate_figures(&label, peer.stack, &calls));
            if in_flight == THROUGHPUT_IN_FLIGHT && peer.stack == Stack::Rpc {
                let spawned =
                    |count| workload::spawned_calls(peer.client.clone(), small.clone(), in_flight, count);
                harness.run(spawned(warmup))?;
                if let Some(calls) = harness.run(spawned(count))? {
                    let figures = rate_figures(&format!("{label}, spawned"), peer.stack, &calls);
                    results.record(Workload::LoadSpawned, peer.stack, figures);
                }
            }
        }
    }

    // W4.
    const STREAMS_PER_ROUND: usize = 5;
    let (warmup, count) = sizes.stream;
    // The TLS stacks run W1, W2, W3 and the connection costs only.
    for peer in peers.iter_mut().filter(|peer| parts.w4 && !peer.stack.is_tls()) {
        if !peer.stack.streams() {
            progress("W4 streaming", peer.stack, "n/a (no streams)");
            continue;
        }
        harness.run(workload::stream(peer.client.clone(), warmup, SMALL as u64))?;
        // A stream takes a tenth of a second: a single one is at the mercy of whatever else
        // the machine does in that moment, so each round's figure is the median of a few.
        let mut rates = Vec::with_capacity(STREAMS_PER_ROUND);
        for _ in 0..STREAMS_PER_ROUND {
            if let Some(took) = harness.run(workload::stream(peer.client.clone(), count, SMALL as u64))? {
                rates.push(count as f64 / took.as_secs_f64());
            }
        }
        if !rates.is_empty() {
            rates.sort_by(f64::total_cmp);
            let rate = rates[rates.len() / 2];
            progress("W4 streaming", peer.stack, &format!("{} messages/s", report::thousands(rate)));
            results.record(Workload::Streaming, peer.stack, vec![rate]);
        }
    }

    // W5, and for rpc-core also on an extra server with one worker.
    let Some(order) = &plan.work else { return Ok(()) };
    for peer in peers.iter().filter(|peer| !peer.stack.is_tls()) {
        if !peer.stack.works() {
            progress("W5 cpu-heavy", peer.stack, "n/a (no handlers)");
            continue;
        }
        let label = format!("W5 cpu-heavy, {}", plan.flavour.short());
        if let Some(figures) = work(harness, &peer.client, order, sizes.cpu, &label, peer.stack)? {
            results.record(Workload::Cpu, peer.stack, figures);
        }
        if peer.stack == Stack::Rpc {
            let one = Flavour::MultiThread(1);
            let server = ServerProcess::spawn(Stack::Rpc, one, plan.server_cpu)?;
            let client = harness.run(Client::connect(Stack::Rpc, server.addr()))?;
            let label = format!("W5 cpu-heavy, {}", one.short());
            let figures = work(harness, &client, order, sizes.cpu, &label, peer.stack);
            harness.shut_down(vec![client], vec![server]);
            if let Some(figures) = figures? {
                results.record(Workload::CpuOneWorker, peer.stack, figures);
            }
        }
    }
    Ok(())
}

/// W5 on one server: warm-up calls, then measured ones, `CPU_IN_FLIGHT` at a time; the
/// figures of `Workload::Cpu`, `None` for a stack without `work`.
fn work(
    harness: &Harness,
    client: &Client,
    order: &WorkOrder,
    (warmup, count): (u64, u64),
    label: &str,
    stack: Stack,
) -> Result<Option<Vec<f64>>, BoxError> {
    let calls = |count| workload::work_calls(client.clone(), order.clone(), CPU_IN_FLIGHT, count);
    harness.run(calls(warmup))?;
    Ok(harness.run(calls(count))?.map(|calls| rate_figures(label, stack, &calls)))
}

/// Opens `count` new connections to `peer`'s server and holds them open together: the time
/// from starting to connect to the first answer (p50 and p99, µs), and the memory each
/// open connection holds, in KiB, in the client and in the server (the live heap's growth
/// while they are open, divided by `count`).
fn connection_costs(harness: &Harness, peer: &mut Peer, count: u64) -> Result<Vec<f64>, BoxError> {
    let (stack, addr) = (peer.stack, peer.server.addr());
    // One connection first, so that whatever is made once (a cached configuration) is not
    // counted per connection.
    let warm = harness.run(workload::connections(stack, addr, payload(SMALL), 1))?;
    settle(harness);
    let server_before = peer.server.allocs()?;
    let client_before = alloc::snapshot();
    let opened = harness.run(workload::connections(stack, addr, payload(SMALL), count))?;
    let client = alloc::snapshot().since(client_before);
    let server = peer.server.allocs()?.since(server_before);
    let micros = |quantile| opened.latencies.value_at_quantile(quantile) as f64 / 1_000.0;
    let kib_each = |live: i64| live as f64 / count as f64 / 1024.0;
    let figures = vec![micros(0.5), micros(0.99), kib_each(client.live), kib_each(server.live)];
    {
        let _context = harness.runtime.enter();
        drop((warm.clients, opened.clients));
    }
    // The connections close (and free what they hold) now, not in the next measurement.
    settle(harness);
    Ok(figures)
}

/// Runs the client's runtime until its live heap holds still for 10 ms (up to a second), so
/// that what earlier work left to finish (tasks not yet polled, connections closing, buffers
/// released) is not counted against what comes next. A current-thread runtime runs only
/// while the harness blocks on it, so such work would otherwise wait for the next
/// measurement.
fn settle(harness: &Harness) {
    harness.runtime.block_on(async {
        let mut last = alloc::snapshot().live;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let now = alloc::snapshot().live;
            if now == last {
                break;
            }
            last = now;
        }
    });
}

/// Prints a progress line for a run of calls; its figures: calls/s, p50 and p99.
fn rate_figures(label: &str, stack: Stack, calls: &workload::Calls) -> Vec<f64> {
    let rate = calls.per_second();
    progress(
        label,
        stack,
        &format!(
            "{} calls/s, p50 {:.1} µs, p99 {:.1} µs",
            report::thousands(rate),
            calls.micros(0.5),
            calls.micros(0.99)
        ),
    );
    vec![rate, calls.micros(0.50), calls.micros(0.99)]
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
    eprintln!("  {workload:<38} {:<12} {figures}", stack.name());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn options(line: &str) -> Options {
        match parse(&args(line)) {
            Ok(Command::Compare(options)) => options,
            other => panic!("a comparison, not {other:?}"),
        }
    }

    #[test]
    fn no_arguments_is_a_full_run_of_every_stack_in_the_default_configuration() {
        assert_eq!(
            options(""),
            Options {
                quick: false,
                rounds: 3,
                config: Config { threads: Threads::Default, pin: Pin::None },
                stacks: Stack::ALL.to_vec(),
                parts: Parts::ALL,
                out: None,
            }
        );
        assert_eq!(Config::DEFAULT.file_names(), ("latest.md".to_owned(), "load-curve.svg".to_owned()));
        assert_eq!(Config::DEFAULT.flags(), "");
        assert_eq!(Threads::Default.flavour(2), Flavour::MultiThread(2));
    }

    #[test]
    fn quick_runs_one_round_and_options_combine() {
        let options = options("--quick --workers 2 --pin one --stacks raw,rpc-core --out x");
        assert!(options.quick);
        assert_eq!(options.rounds, 1);
        assert_eq!(options.config, Config { threads: Threads::Workers(2), pin: Pin::One });
        assert_eq!(options.stacks, [Stack::Rpc, Stack::Raw]);
        assert_eq!(options.out, Some(PathBuf::from("x")));
        let only = self::options("--only w2,w4");
        assert_eq!(only.parts.in_flight(), [64]);
        assert!(only.parts.w4 && !only.parts.w1 && !only.parts.curve && !only.parts.w5);
        assert!(self::options("--only w5").parts.w5);
    }

    #[test]
    fn other_configurations_name_their_files() {
        let config = options("--current-thread --pin split").config;
        assert_eq!(config, Config { threads: Threads::CurrentThread, pin: Pin::Split });
        assert_eq!(
            config.file_names(),
            ("latest-current-thread-pinned.md".to_owned(), "load-curve-current-thread-pinned.svg".to_owned())
        );
        assert_eq!(config.flags(), "--current-thread --pin split");
        assert_eq!(config.describe(), "`--current-thread --pin split`");
        assert_eq!(options("--workers 1").config.slug().as_deref(), Some("workers-1"));
        assert_eq!(options("--pin one").config.slug().as_deref(), Some("one-cpu"));
        assert_eq!(options("--pin none").config.slug(), None);
    }

    #[test]
    fn serve_takes_a_stack_and_an_address() {
        let command = parse(&args("serve --stack tarpc --addr 127.0.0.1:0 --workers 2 --cpu 1"));
        assert_eq!(
            command,
            Ok(Command::Serve {
                stack: Stack::Tarpc,
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                threads: Threads::Workers(2),
                cpu: Some(1),
            })
        );
        let Ok(Command::Serve { threads, .. }) = parse(&args("serve --stack rpc-core --addr 127.0.0.1:0"))
        else {
            panic!("a server")
        };
        assert_eq!(threads, Threads::Default);
        assert!(parse(&args("serve --stack tarpc")).is_err());
        assert!(parse(&args("serve --quick")).is_err());
    }

    #[test]
    fn a_flavour_is_selected_again_by_its_arguments() {
        for flavour in [Flavour::CurrentThread, Flavour::MultiThread(1), Flavour::MultiThread(3)] {
            let mut line = args("serve --stack raw --addr 127.0.0.1:0");
            line.extend(flavour.args());
            let Ok(Command::Serve { threads, .. }) = parse(&line) else { panic!("a server") };
            assert_eq!(threads.flavour(8), flavour);
        }
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&args("--rounds 0")).is_err());
        assert!(parse(&args("--rounds")).is_err());
        assert!(parse(&args("--stacks grpc")).is_err());
        assert!(parse(&args("--pin both")).is_err());
        assert!(parse(&args("--cpu 1")).is_err());
        assert!(parse(&args("--frobnicate")).is_err());
        assert!(parse(&args("--only w6")).is_err());
        assert!(parse(&args("--current-thread --workers 2")).is_err());
        assert_eq!(parse(&args("--quick --help")), Ok(Command::Help));
    }
}
