//! [`Run`]: the rest of a chain, running; and [`OnEnd`], which reports how it ended
//! whatever happens to it.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;

use crate::status::Status;

/// The rest of a chain, running: what [`ServerNext::run`](super::ServerNext::run) and
/// [`ClientNext::run`](super::ClientNext::run) return. Await it for the call's outcome.
///
/// The outcome comes back for every call that ends while the interceptor awaits it:
/// successes, errors, a deadline that passed, a handler that panicked, a call the client
/// cancelled (on a server). Only a call whose future is dropped before it ends never
/// returns here: on a client, the caller stopped waiting (it dropped the call, or a
/// `select!` or `timeout` around it did); on a server, the connection was lost, or the
/// server closed it at the end of its shutdown grace period. To observe those too, use
/// [`on_end`](Run::on_end).
#[must_use = "the call runs only when awaited"]
pub struct Run<'n> {
    call: BoxFuture<'n, Result<(), Status>>,
    deadline: Option<Instant>,
}

impl std::fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run").field("deadline", &self.deadline).finish_non_exhaustive()
    }
}

impl<'n> Run<'n> {
    pub(crate) fn new(call: BoxFuture<'n, Result<(), Status>>, deadline: Option<Instant>) -> Run<'n> {
        Run { call, deadline }
    }

    /// Runs the call and tells `report` how it ended, exactly once, however it ends:
    ///
    /// - with its outcome, when it returns;
    /// - with `INTERNAL` when a panic unwinds through it (the panic then goes on unwinding);
    /// - when its future is dropped before it ends: with the status the server stopped it
    ///   with (its deadline, a cancel), else with `DEADLINE_EXCEEDED` past the call's
    ///   deadline or `CANCELLED` before it.
    ///
    /// `report` is armed at once, so a future dropped before it is first polled reports too.
    /// This is how the built-in [`Tracing`](crate::middleware::Tracing) and `Metrics` see
    /// every call.
    ///
    /// ```
    /// use std::time::Instant;
    /// use rpc_core::interceptor::{ClientContext, ClientInterceptor, ClientNext};
    /// use rpc_core::Status;
    ///
    /// /// Logs the latency and outcome of every call, those the caller gave up on included.
    /// struct Latency;
    ///
    /// impl ClientInterceptor for Latency {
    ///     async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
    ///         // The method's name, shared (not copied) with the call.
    ///         let (method, started) = (ctx.method_name().clone(), Instant::now());
    ///         next.run(ctx)
    ///             .on_end(move |outcome| {
    ///                 let code = outcome.as_ref().err().map(Status::code);
    ///                 tracing::info!(method = method.as_str(), ?code, took = ?started.elapsed(), "call ended");
    ///             })
    ///             .await
    ///     }
    /// }
    /// ```
    pub fn on_end<F>(self, report: F) -> OnEnd<'n, F>
    where
        F: FnOnce(&Result<(), Status>) + Send,
    {
        OnEnd { call: self.call, report: Some(report), deadline: self.deadline }
    }
}

impl Future for Run<'_> {
    type Output = Result<(), Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.call.as_mut().poll(cx)
    }
}

/// A [`Run`] that reports how it ended: see [`Run::on_end`].
#[must_use = "the call runs only when awaited"]
pub struct OnEnd<'n, F: FnOnce(&Result<(), Status>)> {
    call: BoxFuture<'n, Result<(), Status>>,
    report: Option<F>,
    deadline: Option<Instant>,
}

impl<F: FnOnce(&Result<(), Status>)> std::fmt::Debug for OnEnd<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnEnd").field("reported", &self.report.is_none()).finish_non_exhaustive()
    }
}

impl<F: FnOnce(&Result<(), Status>)> OnEnd<'_, F> {
    fn report(&mut self, outcome: &Result<(), Status>) {
        if let Some(report) = self.report.take() {
            report(outcome);
        }
    }
}

// Nothing is pinned in place: the call is boxed, the report only moved out.
impl<F: FnOnce(&Result<(), Status>)> Unpin for OnEnd<'_, F> {}

impl<F: FnOnce(&Result<(), Status>)> Future for OnEnd<'_, F> {
    type Output = Result<(), Status>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.call.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(outcome)) => {
                this.report(&outcome);
                Poll::Ready(outcome)
            }
            Err(panic) => {
                this.report(&Err(Status::internal("the call panicked")));
                std::panic::resume_unwind(panic)
            }
        }
    }
}

impl<F: FnOnce(&Result<(), Status>)> Drop for OnEnd<'_, F> {
    fn drop(&mut self) {
        if self.report.is_none() {
            return;
        }
        let status = if let Some(stopped) = super::guard::stopped_with() {
            stopped
        } else if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            Status::deadline_exceeded("the call was abandoned at its deadline")
        } else {
            Status::cancelled("the call was abandoned before it ended")
        };
        self.report(&Err(status));
    }
}
