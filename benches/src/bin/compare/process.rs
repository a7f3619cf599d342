//! Server processes: the harness re-executes itself as `compare serve` for each stack, and
//! talks to each child over its standard input and output.
//!
//! The child binds the address it is given (port 0: the kernel picks one), prints
//! `listening <addr>` on stdout, and serves. On stdin it takes commands, one per line:
//! `allocs` answers `allocs <allocations> <bytes> <live bytes>` (its allocation counters, see
//! [`crate::alloc`]); end of input, which is also what it sees when the harness dies
//! however it dies, makes it exit. The harness kills and reaps it when done with it, on
//! errors and panics too (in [`ServerProcess`]'s `Drop`).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use tokio::net::TcpListener;

use crate::alloc::{self, AllocSnapshot};
use crate::stacks::{self, Stack};
use crate::{BoxError, Flavour};

/// The child side: serves `stack` on `addr` with a runtime of `flavour`, pinned to `cpu` if
/// given, until stdin closes.
pub(crate) fn serve(
    stack: Stack,
    addr: SocketAddr,
    flavour: Flavour,
    cpu: Option<usize>,
) -> Result<(), BoxError> {
    if let Some(cpu) = cpu
        && let Err(error) = crate::pin_to(cpu)
    {
        eprintln!("compare serve: running unpinned: {error}");
    }
    let runtime = flavour.runtime()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        {
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "listening {local}")?;
            stdout.flush()?;
        }
        std::thread::Builder::new().name("control".into()).spawn(control)?;
        stacks::serve(stack, listener).await
    })
}

/// Answers the harness's commands on stdin; exits the process when stdin closes. Allocates
/// nothing per command once running, so it does not disturb the counts it reports.
fn control() {
    let stdin = std::io::stdin();
    let mut line = String::with_capacity(64);
    loop {
        line.clear();
        match stdin.read_line(&mut line) {
            Ok(0) | Err(_) => std::process::exit(0),
            Ok(_) => {}
        }
        let mut stdout = std::io::stdout().lock();
        let answered = match line.trim() {
            "allocs" => {
                let AllocSnapshot { allocations, bytes, live } = alloc::snapshot();
                writeln!(stdout, "allocs {allocations} {bytes} {live}")
            }
            other => writeln!(stdout, "error unknown command {other:?}"),
        };
        if answered.and_then(|()| stdout.flush()).is_err() {
            std::process::exit(1);
        }
    }
}

/// A running server child; killed and reaped when dropped.
pub(crate) struct ServerProcess {
    stack: Stack,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
    addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `stack`'s server on a free loopback port, pinned to `cpu` if given, and waits
    /// until it listens.
    pub(crate) fn spawn(
        stack: Stack,
        flavour: Flavour,
        cpu: Option<usize>,
    ) -> Result<ServerProcess, BoxError> {
        let cpu = cpu.map(|cpu| ["--cpu".to_owned(), cpu.to_string()]);
        let mut command = Command::new(std::env::current_exe()?);
        if stack.is_tls() {
            command.envs(stacks::tls::material().env());
        }
        let mut child = command
            .args(["serve", "--stack", stack.name(), "--addr", "127.0.0.1:0"])
            .args(flavour.args())
            .args(cpu.iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the server's stdin and stdout are not piped".into());
        };
        let mut server = ServerProcess {
            stack,
            child,
            stdin,
            stdout: BufReader::new(stdout),
            line: String::with_capacity(64),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let line = server.read_line()?;
        server.addr = line
            .strip_prefix("listening ")
            .ok_or_else(|| format!("{stack} server said {line:?} instead of its address"))?
            .parse()?;
        Ok(server)
    }

    /// The address the server listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server process's allocation counters now.
    pub(crate) fn allocs(&mut self) -> Result<AllocSnapshot, BoxError> {
        writeln!(self.stdin, "allocs")?;
        self.stdin.flush()?;
        let line = self.read_line()?;
        let mut fields = line.strip_prefix("allocs ").unwrap_or_default().split(' ');
        let mut count = || fields.next().map(str::parse::<u64>);
        let (allocations, bytes) = (count(), count());
        let live = fields.next().map(str::parse::<i64>);
        match (allocations, bytes, live) {
            (Some(Ok(allocations)), Some(Ok(bytes)), Some(Ok(live))) => {
                Ok(AllocSnapshot { allocations, bytes, live })
            }
            _ => Err(format!("{} server answered {line:?} to allocs", self.stack).into()),
        }
    }

    fn read_line(&mut self) -> Result<String, BoxError> {
        self.line.clear();
        if self.stdout.read_line(&mut self.line)? == 0 {
            let status = self.child.try_wait()?;
            return Err(format!("the {} server closed its output (exit: {status:?})", self.stack).into());
        }
        Ok(self.line.trim_end().to_owned())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
