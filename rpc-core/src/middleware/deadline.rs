//! [`Deadlines`]: a default timeout, and deadlines carried from a call into the calls its
//! handler makes.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::interceptor::ServerContext;
use crate::interceptor::{ClientContext, ClientInterceptor, ClientNext, ServerInterceptor, ServerNext};
use crate::status::Status;

tokio::task_local! {
    /// The deadline of the call the current task is handling.
    static CURRENT: Option<tokio::time::Instant>;
}

/// Deadlines across services: install it on the server and on the channels its handlers use,
/// and a chain A → B → C never waits past A's deadline.
///
/// - On a server, it makes the call's deadline the current one for the handler's task;
///   with [`default_timeout`](Deadlines::default_timeout), calls that came without a deadline
///   get one, and are stopped with `DeadlineExceeded` when it passes.
/// - On a channel, it gives each call the earliest of its own deadline, the current call's
///   (if the call is made from a handler), and now + the default timeout (if set).
///
/// ```no_run
/// use std::time::Duration;
/// use rpc_core::middleware::Deadlines;
/// use rpc_core::{Channel, Server};
///
/// # async fn run() -> Result<(), rpc_core::Status> {
/// // Calls this server's handlers make to `inventory` inherit the caller's deadline.
/// let inventory = Channel::builder("inventory:50051").interceptor(Deadlines::new()).connect().await?;
/// let server = Server::builder().interceptor(Deadlines::new().default_timeout(Duration::from_secs(5)));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Deadlines {
    default_timeout: Option<Duration>,
}

impl Deadlines {
    /// Propagation only: no default timeout.
    pub fn new() -> Deadlines {
        Deadlines::default()
    }

    /// A timeout for calls that have no deadline: on a channel, for calls made without one;
    /// on a server, for calls received without one.
    pub fn default_timeout(mut self, timeout: Duration) -> Deadlines {
        self.default_timeout = Some(timeout);
        self
    }

    /// The deadline of the call the current task is handling, if it came through a server
    /// with `Deadlines` installed and had one.
    pub fn current() -> Option<Instant> {
        CURRENT.try_with(|deadline| *deadline).ok().flatten().map(tokio::time::Instant::into_std)
    }

    fn default_deadline(&self) -> Option<Instant> {
        self.default_timeout.and_then(|timeout| Instant::now().checked_add(timeout))
    }
}

impl ServerInterceptor for Deadlines {
    async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
        // A call that came without a deadline gets the default one: its handler is stopped
        // there, as at a deadline the caller set.
        if ctx.deadline().is_none()
            && let Some(default) = self.default_deadline()
        {
            ctx.shorten_deadline(default);
        }
        let deadline = ctx.deadline().map(tokio::time::Instant::from_std);
        CURRENT.scope(deadline, next.run(ctx)).await
    }
}

impl ClientInterceptor for Deadlines {
    async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
        let earliest =
            [ctx.deadline(), Deadlines::current(), self.default_deadline()].into_iter().flatten().min();
        ctx.set_deadline(earliest);
        next.run(ctx).await
    }
}

/// `future`, run under the deadline of the call this task is handling (if any).
pub(super) fn carry<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let deadline = CURRENT.try_with(|deadline| *deadline).ok().flatten();
    CURRENT.scope(deadline, future)
}
