//! The figures of every round, their medians and spreads, and the markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::machine::Machine;
use crate::stacks::Stack;
use crate::workload::{
    CPU_IN_FLIGHT, CPU_PER_CALL, Calibration, IN_FLIGHT, LARGE, SMALL, Sizes, THROUGHPUT_IN_FLIGHT, Workload,
};

/// One figure a workload reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Metric {
    /// Its column heading.
    pub(crate) name: &'static str,
    /// Decimals shown.
    pub(crate) decimals: usize,
}

const fn metric(name: &'static str, decimals: usize) -> Metric {
    Metric { name, decimals }
}

/// The figures of `workload`, in the order they are recorded; the first is the one the
/// ratio columns compare.
pub(crate) fn metrics(workload: Workload) -> &'static [Metric] {
    const LATENCY: &[Metric] = &[metric("p50 µs", 1), metric("p99 µs", 1), metric("p99.9 µs", 1)];
    const LOAD: &[Metric] = &[metric("calls/s", 0), metric("p50 µs", 1), metric("p99 µs", 1)];
    const LARGE: &[Metric] = &[metric("p50 µs", 1), metric("p99 µs", 1), metric("MB/s", 0)];
    const STREAMING: &[Metric] = &[metric("messages/s", 0)];
    const CONNECTION: &[Metric] = &[
        metric("first answer p50 µs", 0),
        metric("first answer p99 µs", 0),
        metric("client KiB/conn", 1),
        metric("server KiB/conn", 1),
    ];
    const ALLOCS: &[Metric] = &[
        metric("client allocs/call", 2),
        metric("client bytes/call", 0),
        metric("server allocs/call", 2),
        metric("server bytes/call", 0),
    ];
    match workload {
        Workload::Latency => LATENCY,
        Workload::Load(_) | Workload::LoadSpawned | Workload::Cpu | Workload::CpuOneWorker => LOAD,
        Workload::Large => LARGE,
        Workload::Streaming => STREAMING,
        Workload::AllocsSequential | Workload::AllocsLoaded => ALLOCS,
        Workload::Connection => CONNECTION,
    }
}

/// The median of a figure over the rounds, and its smallest and largest values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    /// The median (the mean of the middle two for an even number of rounds).
    pub(crate) median: f64,
    /// The smallest value.
    pub(crate) min: f64,
    /// The largest value.
    pub(crate) max: f64,
    /// How many rounds it summarises.
    pub(crate) rounds: usize,
}

impl Spread {
    /// The spread of `values`; `None` if there are none.
    pub(crate) fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Spread { median, min: sorted[0], max: sorted[n - 1], rounds: n })
    }
}

/// Every figure of every round.
#[derive(Debug, Default)]
pub(crate) struct Results {
    rounds: BTreeMap<(Workload, Stack), Vec<Vec<f64>>>,
}

impl Results {
    /// Records one round's figures of `workload` for `stack`, in the order of [`metrics`].
    pub(crate) fn record(&mut self, workload: Workload, stack: Stack, figures: Vec<f64>) {
        debug_assert_eq!(figures.len(), metrics(workload).len());
        self.rounds.entry((workload, stack)).or_default().push(figures);
    }

    /// The spread over the rounds of figure `index` of `workload` for `stack`.
    pub(crate) fn spread(&self, workload: Workload, stack: Stack, index: usize) -> Option<Spread> {
        let rounds = self.rounds.get(&(workload, stack))?;
        Spread::of(&rounds.iter().filter_map(|figures| figures.get(index).copied()).collect::<Vec<_>>())
    }
}

/// How the run was set up, for the report's preamble.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    /// The stacks compared.
    pub(crate) stacks: Vec<Stack>,
    /// Rounds run.
    pub(crate) rounds: usize,
    /// The workload sizes.
    pub(crate) sizes: Sizes,
    /// The configuration (runtime and pinning) in a few words: the default, or the flags
    /// that select it.
    pub(crate) configuration: String,
    /// Whether it is the default configuration.
    pub(crate) default_configuration: bool,
    /// The command that makes this run.
    pub(crate) command: String,
    /// The runtime of every process, described.
    pub(crate) runtime: String,
    /// The servers' runtime, in a few words (`multi-thread, 2 workers`).
    pub(crate) server_runtime: String,
    /// Which CPUs the processes were pinned to, described.
    pub(crate) pinning: String,
    /// The file name of the load curve's chart.
    pub(crate) chart: String,
    /// W5's calibration, if W5 ran.
    pub(crate) calibration: Option<Calibration>,
    /// Whether this was a `--quick` run.
    pub(crate) quick: bool,
    /// How long the run took.
    pub(crate) took: std::time::Duration,
}

/// The whole report, in markdown.
pub(crate) fn markdown(results: &Results, setup: &Setup, machine: &Machine) -> String {
    let mut out = String::new();
    let quick = if setup.quick { " (--quick: tiny sizes, figures meaningless)" } else { "" };
    let _ = writeln!(out, "# rpc-core vs tonic vs tarpc vs raw TCP{quick}\n");
    if !setup.default_configuration {
        let _ = writeln!(
            out,
            "**Configuration: {}**, not the default (the default, every process on a multi-thread \
             runtime with the default number of workers and unpinned, as with `#[tokio::main]`, is \
             reported in `latest.md`).\n",
            setup.configuration
        );
    }
    let _ = writeln!(
        out,
        "Generated by `{}`. Each figure is the median of {} round(s), with [min–max] over the rounds. \
         Ratios compare medians: for latencies lower is better, for rates higher is better.\n",
        setup.command, setup.rounds
    );
    preamble(&mut out, setup, machine);

    // The TLS stacks have a section of their own.
    let stacks: &Vec<Stack> = &setup.stacks.iter().copied().filter(|stack| !stack.is_tls()).collect();
    let (warmup, calls) = setup.sizes.latency;
    section(
        &mut out,
        &format!("W1 latency: one call at a time, {SMALL}-byte payload"),
        &format!("{} calls after {} warm-up calls.", thousands(calls as f64), thousands(warmup as f64)),
    );
    ratio_table(&mut out, results, stacks, Workload::Latency);

    let (warmup, calls) = setup.sizes.load;
    section(
        &mut out,
        &format!(
            "W2 throughput: {THROUGHPUT_IN_FLIGHT} calls in flight on the one connection, {SMALL}-byte payload"
        ),
        &format!(
            "{} calls after {} warm-up calls. The row *rpc-core (handlers spawned)* is rpc-core \
             through `echo_spawned`, the same echo as an ordinary handler: each call's handler in \
             a task of its own, as every handler runs by default. The row *rpc-core* (and every \
             other workload) calls `echo`, marked `#[rpc(inline)]`: answered on the connection's \
             task, as a handler that never waits can be.",
            thousands(calls as f64),
            thousands(warmup as f64)
        ),
    );
    let w2 = Workload::Load(THROUGHPUT_IN_FLIGHT);
    let spawned = Extra {
        label: "rpc-core (handlers spawned)",
        key: (Workload::LoadSpawned, Stack::Rpc),
        bases: [(w2, Stack::Tonic), (w2, Stack::Raw)],
    };
    let extras = if stacks.contains(&Stack::Rpc) { vec![spawned] } else { Vec::new() };
    ratio_table_with(&mut out, results, stacks, w2, &extras);

    let (warmup, calls) = setup.sizes.large;
    section(
        &mut out,
        &format!("W3 large: one call at a time, {} KiB payload", LARGE / 1024),
        &format!(
            "{} calls after {} warm-up calls. MB/s is payload megabytes (10^6 bytes) sent per second; \
             as many come back.",
            thousands(calls as f64),
            thousands(warmup as f64)
        ),
    );
    ratio_table(&mut out, results, stacks, Workload::Large);

    let (warmup, messages) = setup.sizes.stream;
    section(
        &mut out,
        &format!("W4 streaming: one server stream of {SMALL}-byte messages"),
        &format!(
            "{} messages per stream, after a warm-up stream of {}; each round's figure is the median of \
             5 streams in a row (one lasts about a tenth of a second, at the mercy of whatever else the \
             machine does in that moment). tarpc has no streams; raw's stream is a run of frames with \
             TCP's own backpressure as the only flow control.",
            thousands(messages as f64),
            thousands(warmup as f64)
        ),
    );
    ratio_table(&mut out, results, stacks, Workload::Streaming);

    cpu_section(&mut out, results, setup);

    tls_section(&mut out, results, setup);

    let (warmup, calls) = setup.sizes.load;
    section(
        &mut out,
        &format!("Latency under load: W2 at {} calls in flight", list(&IN_FLIGHT)),
        &format!(
            "{} calls per point after {} warm-up calls; the 64 point is W2. Chart: `{}`.",
            thousands(calls as f64),
            thousands(warmup as f64),
            setup.chart
        ),
    );
    curve_table(&mut out, results, stacks);

    section(
        &mut out,
        "Allocations per unary call",
        &format!(
            "Counted by a counting global allocator in each process over the measured calls of W1 \
             (1 in flight) and W2 ({THROUGHPUT_IN_FLIGHT} in flight), warm-up excluded: the client side \
             in the harness, the server side in its own process. Everything the process allocated \
             in the window counts, the runtime's share included; the harness adds a few \
             allocations per window, not per call. A reallocation counts as one."
        ),
    );
    alloc_table(&mut out, results, stacks);
    out
}

fn preamble(out: &mut String, setup: &Setup, machine: &Machine) {
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| date | {} (start of the run) |", machine.date);
    let _ = writeln!(out, "| CPU | {} |", machine.cpu);
    let _ = writeln!(out, "| cores | {} |", machine.cores);
    let _ = writeln!(out, "| kernel | {} |", machine.kernel);
    let _ = writeln!(out, "| rustc | {} |", machine.rustc);
    let _ = writeln!(out, "| profile | {} |", machine.profile);
    if let Some(commit) = &machine.commit {
        let _ = writeln!(out, "| commit | {commit} |");
    }
    let _ = writeln!(
        out,
        "| stacks | rpc-core (this workspace), tonic {} (prost), tarpc {} (TCP, bincode), raw tokio TCP; rpc-core and tonic also over TLS 1.3 (rustls, ring) |",
        env!("COMPARE_TONIC_VERSION"),
        env!("COMPARE_TARPC_VERSION")
    );
    let _ = writeln!(out, "| configuration | {} |", setup.configuration);
    let _ = writeln!(out, "| runtime | {} |", setup.runtime);
    let _ = writeln!(out, "| CPU pinning | {} |", setup.pinning);
    let _ = writeln!(out, "| rounds | {}, the stacks' order rotated each round |", setup.rounds);
    let _ = writeln!(out, "| took | {:.0} s |", setup.took.as_secs_f64());
    let _ = writeln!(
        out,
        "\nEach stack's server runs in its own process (the harness re-executed as `compare serve`), \
         its client in the harness; one TCP connection per stack over 127.0.0.1 with `TCP_NODELAY` \
         set on both ends; every stack echoes the same message shape (`bytes payload = 1`: \
         protobuf for rpc-core, tonic and raw, bincode for tarpc). Latencies are per call, from \
         the client's call to its answer, in an HDR histogram (3 significant figures). rpc-core's \
         `echo` is marked `#[rpc(inline)]` (answered on the connection's task, see W2); its W5 \
         handler is an ordinary one. The machine is shared and noisy: compare ratios within one \
         run, not figures across runs."
    );
}

/// W5: a table of the stacks that serve `work`, with rpc-core also on one worker, and the
/// ratios that matter.
fn cpu_section(out: &mut String, results: &Results, setup: &Setup) {
    let (warmup, calls) = setup.sizes.cpu;
    let work = match setup.calibration {
        Some(Calibration { iterations, nanos_per_iteration }) => format!(
            "Each call asks the server to hash its {SMALL}-byte payload {iterations} times (FNV-1a 64, \
             each round seeded with the last one's hash) and answer the digest, which the client \
             checks: {iterations} rounds because the harness timed a round at {nanos_per_iteration:.1} ns \
             in its own process at startup, so about {:.1} µs of CPU per call (the target: {} µs).",
            iterations as f64 * nanos_per_iteration / 1_000.0,
            CPU_PER_CALL.as_micros()
        ),
        None => "Not run.".to_owned(),
    };
    section(
        out,
        &format!(
            "W5 CPU-heavy handler: {CPU_IN_FLIGHT} calls in flight on the one connection, ~{} µs of CPU each",
            CPU_PER_CALL.as_micros()
        ),
        &format!(
            "{work} {} calls after {} warm-up calls. rpc-core's `work` handler is an ordinary one, not \
             `inline`: each call runs in a task of its own, so a connection's calls spread over the \
             server runtime's workers. rpc-core is measured twice: on the servers' runtime, as every \
             stack, and on an extra server process with a one-worker multi-thread runtime, to show what \
             the workers add. tonic's and tarpc's servers also run each call in a task of its own. \
             Raw TCP has no handlers to compare: not measured.",
            thousands(calls as f64),
            thousands(warmup as f64)
        ),
    );
    let metrics = metrics(Workload::Cpu);
    let mut header = vec!["stack".to_owned(), "server runtime".to_owned()];
    header.extend(metrics.iter().map(|m| m.name.to_owned()));
    header.push(format!("{} vs tonic", metrics[0].name));
    let tonic = [(Workload::Cpu, Stack::Tonic)];
    let mut rows = Vec::new();
    for &stack in setup.stacks.iter().filter(|stack| stack.works()) {
        let cells = vec![stack.to_string(), setup.server_runtime.clone()];
        rows.push(row(results, (Workload::Cpu, stack), &tonic, cells));
        if stack == Stack::Rpc {
            let cells = vec![stack.to_string(), "multi-thread, 1 worker".to_owned()];
            rows.push(row(results, (Workload::CpuOneWorker, stack), &tonic, cells));
        }
    }
    table(out, &header, rows);
    if setup.stacks.contains(&Stack::Rpc) {
        let rpc = results.spread(Workload::Cpu, Stack::Rpc, 0);
        let _ = writeln!(
            out,
            "\nrpc-core's calls/s on its servers' runtime ({}) / on one worker: **{}**. rpc-core / tonic, \
             both on the servers' runtime: **{}**.",
            setup.server_runtime,
            ratio_cell(rpc, results.spread(Workload::CpuOneWorker, Stack::Rpc, 0)),
            ratio_cell(rpc, results.spread(Workload::Cpu, Stack::Tonic, 0)),
        );
    }
}

/// TLS: W1, W2 and W3 of rpc-core and tonic over TLS beside their plaintext figures, what a
/// connection costs in each, and the targets, met or not.
fn tls_section(out: &mut String, results: &Results, setup: &Setup) {
    let stacks: Vec<Stack> = [Stack::Rpc, Stack::RpcTls, Stack::Tonic, Stack::TonicTls]
        .into_iter()
        .filter(|stack| setup.stacks.contains(stack))
        .collect();
    if !stacks.iter().any(|stack| stack.is_tls()) {
        return;
    }
    let w2 = Workload::Load(THROUGHPUT_IN_FLIGHT);
    section(
        out,
        "TLS: W1, W2 and W3 over TLS 1.3, and what a connection costs",
        &format!(
            "`rpc-core+tls` and `tonic+tls` are the same servers and clients over TLS 1.3, \
            each with its own rustls support (ring provider; an ECDSA P-256 certificate the \
            harness makes at startup; one connection, so one handshake, per client), \
            measured in the same rounds as the rows in clear. *New connection to first \
            answer* is the time from starting to connect (TCP, the TLS handshake, the \
            protocol's own setup) to the answer of a first {SMALL}-byte call, over {} \
            connections opened one after the other and then held open together; the KiB per \
            connection are the growth of each process's live heap while they are open, \
            divided by their number.",
            thousands(setup.sizes.connections as f64)
        ),
    );
    let header: Vec<String> = [
        "stack",
        "W1 p50 µs",
        "W1 p99 µs",
        "W2 calls/s",
        "W2 p50 µs",
        "W3 p50 µs",
        "W3 MB/s",
        "new connection to first answer p50 µs",
        "client KiB/conn",
        "server KiB/conn",
    ]
    .map(str::to_owned)
    .to_vec();
    let figures = [
        (Workload::Latency, 0),
        (Workload::Latency, 1),
        (w2, 0),
        (w2, 1),
        (Workload::Large, 0),
        (Workload::Large, 2),
        (Workload::Connection, 0),
        (Workload::Connection, 2),
        (Workload::Connection, 3),
    ];
    let rows = stacks
        .iter()
        .map(|&stack| {
            let mut cells = vec![stack.to_string()];
            for (workload, index) in figures {
                let decimals = metrics(workload)[index].decimals;
                cells.push(match results.spread(workload, stack, index) {
                    Some(spread) => spread_cell(spread, decimals),
                    None => "n/a".to_owned(),
                });
            }
            cells
        })
        .collect();
    table(out, &header, rows);

    let median = |workload, stack, index| results.spread(workload, stack, index).map(|spread| spread.median);
    let verdict = |met: Option<bool>| match met {
        Some(true) => "**met**",
        Some(false) => "**not met**",
        None => "not measured",
    };
    let _ = writeln!(
        out,
        "
Targets:
"
    );
    let (rpc_w2, tonic_w2) = (median(w2, Stack::RpcTls, 0), median(w2, Stack::TonicTls, 0));
    let ratio = rpc_w2.zip(tonic_w2).map(|(rpc, tonic)| rpc / tonic);
    let _ = writeln!(
        out,
        "- W2 over TLS, rpc-core / tonic ≥ 4: {} ({}).",
        ratio.map_or("n/a".to_owned(), |ratio| format!("{ratio:.2}×")),
        verdict(ratio.map(|ratio| ratio >= 4.0))
    );
    let (rpc_w1, tonic_w1) =
        (median(Workload::Latency, Stack::RpcTls, 0), median(Workload::Latency, Stack::TonicTls, 0));
    let _ = writeln!(
        out,
        "- W1 p50 over TLS below tonic's: {} µs against {} µs ({}).",
        rpc_w1.map_or("n/a".to_owned(), |v| format!("{v:.1}")),
        tonic_w1.map_or("n/a".to_owned(), |v| format!("{v:.1}")),
        verdict(rpc_w1.zip(tonic_w1).map(|(rpc, tonic)| rpc < tonic))
    );
    let cost = rpc_w2.zip(median(w2, Stack::Rpc, 0)).map(|(tls, plain)| 1.0 - tls / plain);
    let _ = writeln!(
        out,
        "- TLS costs rpc-core ≤ 20% of its W2 calls/s in clear: {} ({}).",
        cost.map_or("n/a".to_owned(), |cost| format!("{:.0}%", cost * 100.0)),
        verdict(cost.map(|cost| cost <= 0.20))
    );
    let _ = writeln!(
        out,
        "
What TLS adds to a connection (the TLS row less the row in clear):
"
    );
    for (name, tls, plain) in
        [("rpc-core", Stack::RpcTls, Stack::Rpc), ("tonic", Stack::TonicTls, Stack::Tonic)]
    {
        let added = |index| {
            median(Workload::Connection, tls, index)
                .zip(median(Workload::Connection, plain, index))
                .map(|(tls, plain)| tls - plain)
        };
        let show =
            |value: Option<f64>, unit: &str| value.map_or("n/a".to_owned(), |v| format!("{v:.1} {unit}"));
        let _ = writeln!(
            out,
            "- {name}: handshake {} to the first answer; {} per connection in the client, {} in the server.",
            show(added(0), "µs"),
            show(added(2), "KiB"),
            show(added(3), "KiB"),
        );
    }
}

fn section(out: &mut String, title: &str, description: &str) {
    let _ = writeln!(out, "\n## {title}\n\n{description}\n");
}

/// A table of `workload`'s figures per stack, with its first figure's ratio to tonic's and
/// to raw's.
fn ratio_table(out: &mut String, results: &Results, stacks: &[Stack], workload: Workload) {
    ratio_table_with(out, results, stacks, workload, &[]);
}

/// A row a table adds to its stacks' rows.
struct Extra {
    /// Its first cell.
    label: &'static str,
    /// Whose figures it shows.
    key: (Workload, Stack),
    /// What the ratio columns compare it with (tonic's and raw's figures).
    bases: [(Workload, Stack); 2],
}

/// [`ratio_table`], with `extras` after the stacks' rows.
fn ratio_table_with(
    out: &mut String,
    results: &Results,
    stacks: &[Stack],
    workload: Workload,
    extras: &[Extra],
) {
    let metrics = metrics(workload);
    let primary = metrics[0].name;
    let mut header = vec!["stack".to_owned()];
    header.extend(metrics.iter().map(|m| m.name.to_owned()));
    header.push(format!("{primary} vs tonic"));
    header.push(format!("{primary} vs raw"));
    let bases = [(workload, Stack::Tonic), (workload, Stack::Raw)];
    let mut rows: Vec<_> = stacks
        .iter()
        .map(|&stack| row(results, (workload, stack), &bases, vec![stack.to_string()]))
        .collect();
    rows.extend(
        extras.iter().map(|extra| row(results, extra.key, &extra.bases, vec![extra.label.to_owned()])),
    );
    table(out, &header, rows);
}

/// The latency-under-load curve: one row per point and stack.
fn curve_table(out: &mut String, results: &Results, stacks: &[Stack]) {
    let metrics = metrics(Workload::Load(1));
    let mut header = vec!["in flight".to_owned(), "stack".to_owned()];
    header.extend(metrics.iter().map(|m| m.name.to_owned()));
    header.push(format!("{} vs tonic", metrics[0].name));
    header.push(format!("{} vs raw", metrics[0].name));
    let mut rows = Vec::new();
    for in_flight in IN_FLIGHT {
        for &stack in stacks {
            let workload = Workload::Load(in_flight);
            rows.push(row(
                results,
                (workload, stack),
                &[(workload, Stack::Tonic), (workload, Stack::Raw)],
                vec![in_flight.to_string(), stack.to_string()],
            ));
        }
    }
    table(out, &header, rows);
}

fn alloc_table(out: &mut String, results: &Results, stacks: &[Stack]) {
    let mut header = vec!["in flight".to_owned(), "stack".to_owned()];
    header.extend(metrics(Workload::AllocsSequential).iter().map(|m| m.name.to_owned()));
    let mut rows = Vec::new();
    for (workload, in_flight) in
        [(Workload::AllocsSequential, 1), (Workload::AllocsLoaded, THROUGHPUT_IN_FLIGHT)]
    {
        for &stack in stacks {
            rows.push(row(results, (workload, stack), &[], vec![in_flight.to_string(), stack.to_string()]));
        }
    }
    table(out, &header, rows);
}

/// `cells`, then the figures of `key` (a workload and a stack), then its first figure's ratio
/// to the first figure of each of `bases`.
fn row(
    results: &Results,
    key: (Workload, Stack),
    bases: &[(Workload, Stack)],
    mut cells: Vec<String>,
) -> Vec<String> {
    let (workload, stack) = key;
    for (index, metric) in metrics(workload).iter().enumerate() {
        cells.push(match results.spread(workload, stack, index) {
            Some(spread) => spread_cell(spread, metric.decimals),
            None => "n/a".to_owned(),
        });
    }
    let mine = results.spread(workload, stack, 0);
    for &(workload, stack) in bases {
        cells.push(ratio_cell(mine, results.spread(workload, stack, 0)));
    }
    cells
}

/// The ratio of two medians, `1.23×`; `n/a` if either is missing or the base is not positive.
fn ratio_cell(mine: Option<Spread>, base: Option<Spread>) -> String {
    match (mine, base) {
        (Some(mine), Some(base)) if base.median > 0.0 => format!("{:.2}×", mine.median / base.median),
        _ => "n/a".to_owned(),
    }
}

fn table(out: &mut String, header: &[String], rows: Vec<Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

/// `median [min–max]`, or the one value of a one-round run.
fn spread_cell(spread: Spread, decimals: usize) -> String {
    let number = |value: f64| if decimals == 0 { thousands(value) } else { format!("{value:.decimals$}") };
    if spread.rounds == 1 {
        number(spread.median)
    } else {
        format!("{} [{}–{}]", number(spread.median), number(spread.min), number(spread.max))
    }
}

/// A whole number with thousands separators: `1,234,567`.
pub(crate) fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 && digits != "0" { format!("-{grouped}") } else { grouped }
}

fn list(values: &[u64]) -> String {
    match values {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => {
            format!("{} and {last}", init.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_rounds() {
        let odd = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!(odd, Spread { median: 2.0, min: 1.0, max: 3.0, rounds: 3 });
        let even = Spread::of(&[4.0, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!(even.median, 2.5);
        assert_eq!(Spread::of(&[]), None);
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }

    #[test]
    fn cells_show_the_spread_only_over_several_rounds() {
        let one = Spread { median: 1.26, min: 1.26, max: 1.26, rounds: 1 };
        assert_eq!(spread_cell(one, 1), "1.3");
        let three = Spread { median: 20_000.0, min: 19_000.0, max: 21_500.0, rounds: 3 };
        assert_eq!(spread_cell(three, 0), "20,000 [19,000–21,500]");
    }

    #[test]
    fn ratios_compare_medians_and_missing_stacks_are_na() {
        let mut results = Results::default();
        results.record(Workload::Streaming, Stack::Rpc, vec![300.0]);
        results.record(Workload::Streaming, Stack::Tonic, vec![100.0]);
        let bases = [(Workload::Streaming, Stack::Tonic), (Workload::Streaming, Stack::Raw)];
        let cells = row(&results, (Workload::Streaming, Stack::Rpc), &bases, vec![]);
        assert_eq!(cells, ["300", "3.00×", "n/a"]);
        let cells = row(&results, (Workload::Streaming, Stack::Tarpc), &bases, vec![]);
        assert_eq!(cells, ["n/a", "n/a", "n/a"]);
    }

    #[test]
    fn rows_compare_across_workloads() {
        let mut results = Results::default();
        results.record(Workload::Cpu, Stack::Rpc, vec![90_000.0, 700.0, 900.0]);
        results.record(Workload::CpuOneWorker, Stack::Rpc, vec![50_000.0, 1_200.0, 1_500.0]);
        results.record(Workload::Cpu, Stack::Tonic, vec![60_000.0, 1_000.0, 1_400.0]);
        let cells =
            row(&results, (Workload::CpuOneWorker, Stack::Rpc), &[(Workload::Cpu, Stack::Tonic)], vec![]);
        assert_eq!(cells, ["50,000", "1200.0", "1500.0", "0.83×"]);
    }

    #[test]
    fn ratios_are_of_medians_with_two_decimals() {
        let spread = |median| Some(Spread { median, min: median, max: median, rounds: 1 });
        assert_eq!(ratio_cell(spread(90_000.0), spread(50_000.0)), "1.80×");
        assert_eq!(ratio_cell(spread(1.0), spread(3.0)), "0.33×");
        assert_eq!(ratio_cell(spread(1.0), spread(0.0)), "n/a");
        assert_eq!(ratio_cell(None, spread(1.0)), "n/a");
        assert_eq!(ratio_cell(spread(1.0), None), "n/a");
    }

    #[test]
    fn in_flight_points_read_as_a_list() {
        assert_eq!(list(&IN_FLIGHT), "1, 8, 64 and 256");
    }
}
