//! [`Guarded`]: a server's handler (or its chain of interceptors) run under the call's
//! deadline, with its panics caught and, behind interceptors, stoppable by the client's
//! cancel without being dropped from outside.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::CatchUnwind;
use futures_util::task::AtomicWaker;
use tokio::time::{Instant, Sleep};

use crate::status::Status;

/// How long a server's interceptors may go on after the call's deadline has passed or the
/// client has cancelled it (the handler itself is stopped at once): time to observe the
/// outcome and to record it. Past it, the interceptors are dropped too.
pub const INTERCEPTOR_GRACE: Duration = Duration::from_secs(1);

/// The client cancelled a call (set by the connection), or its handler was stopped at its
/// deadline (set by the handler's guard): read by the guard of the chain around it, which
/// then gives the interceptors [`INTERCEPTOR_GRACE`] to end.
#[derive(Debug, Default)]
pub(crate) struct CancelSignal {
    cancelled: AtomicBool,
    deadline_passed: AtomicBool,
    waker: AtomicWaker,
}

impl CancelSignal {
    /// Cancels the call: its task notices at its next poll.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Whether the call was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The handler was stopped at its deadline, one an interceptor may have set after the
    /// chain started.
    fn stop_at_deadline(&self) {
        self.deadline_passed.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn stopped(&self) -> bool {
        self.is_cancelled() || self.deadline_passed.load(Ordering::Acquire)
    }

    /// Whether the call was cancelled or its handler stopped at the deadline.
    fn poll(&self, cx: &mut Context<'_>) -> bool {
        if self.stopped() {
            return true;
        }
        self.waker.register(cx.waker());
        self.stopped()
    }
}

/// What a [`Guarded`] runs, for its messages.
#[derive(Debug, Clone, Copy)]
enum Guards {
    /// A handler: stopped at the deadline or at a cancel.
    Handler,
    /// A chain of interceptors around a guarded handler: given [`INTERCEPTOR_GRACE`] after
    /// the deadline or a cancel to end on its own.
    Chain,
}

pin_project_lite::pin_project! {
    /// A future run under a call's deadline, its panic caught; see the constructors. Yields
    /// the future's output, or the status the call ends with when it was stopped.
    pub(crate) struct Guarded<Fut> {
        // `None` once stopped: dropped where the status it was stopped with is known.
        #[pin]
        inner: Option<CatchUnwind<AssertUnwindSafe<Fut>>>,
        #[pin]
        timer: Option<Sleep>,
        cancel: Option<Arc<CancelSignal>>,
        stopping: bool,
        guards: Guards,
        method: &'static str,
    }
}

impl<Fut: Future> Guarded<Fut> {
    /// A handler stopped at `deadline`; `cancel`, when given, stops it too.
    pub(crate) fn handler(
        method: &'static str,
        deadline: Option<Instant>,
        cancel: Option<Arc<CancelSignal>>,
        handler: Fut,
    ) -> Guarded<Fut> {
        Guarded {
            inner: Some(AssertUnwindSafe(handler).catch_unwind()),
            timer: deadline.map(tokio::time::sleep_until),
            cancel,
            stopping: false,
            guards: Guards::Handler,
            method,
        }
    }

    /// The interceptors around a guarded handler: they see the handler's outcome, whatever
    /// it is, and get [`INTERCEPTOR_GRACE`] past the deadline or a cancel to end.
    pub(crate) fn chain(
        method: &'static str,
        deadline: Option<Instant>,
        cancel: Arc<CancelSignal>,
        chain: Fut,
    ) -> Guarded<Fut> {
        Guarded {
            inner: Some(AssertUnwindSafe(chain).catch_unwind()),
            timer: deadline
                .and_then(|deadline| deadline.checked_add(INTERCEPTOR_GRACE))
                .map(tokio::time::sleep_until),
            cancel: Some(cancel),
            stopping: false,
            guards: Guards::Chain,
            method,
        }
    }
}

impl<Fut: Future> Future for Guarded<Fut> {
    type Output = Result<Fut::Output, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let method = *this.method;
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            return Poll::Ready(Err(Status::internal(format!(
                "the call of {method} was polled after it ended"
            ))));
        };
        match inner.poll(cx) {
            Poll::Ready(Ok(output)) => return Poll::Ready(Ok(output)),
            Poll::Ready(Err(panic)) => {
                let message = panic_message(&panic);
                let status = match this.guards {
                    Guards::Handler => {
                        tracing::error!(method, panic = message, "handler panicked");
                        Status::internal(format!("handler for {method} panicked"))
                    }
                    Guards::Chain => {
                        tracing::error!(method, panic = message, "interceptor panicked");
                        Status::internal(format!("an interceptor of {method} panicked"))
                    }
                };
                return Poll::Ready(Err(status));
            }
            Poll::Pending => {}
        }
        if !*this.stopping
            && let Some(cancel) = this.cancel.as_ref()
        {
            match this.guards {
                Guards::Handler if cancel.poll(cx) && cancel.is_cancelled() => {
                    return Poll::Ready(Err(stop(this.inner, cancelled())));
                }
                Guards::Handler => {}
                Guards::Chain if cancel.poll(cx) => {
                    // From the cancel, or the deadline the handler was stopped at (an
                    // interceptor may have set it), the interceptors have a grace period.
                    *this.stopping = true;
                    this.timer.set(Some(tokio::time::sleep(INTERCEPTOR_GRACE)));
                }
                Guards::Chain => {}
            }
        }
        if let Some(timer) = this.timer.as_pin_mut()
            && timer.poll(cx).is_ready()
        {
            let cancelled_by_client = this.cancel.as_ref().is_some_and(|cancel| cancel.is_cancelled());
            let status = match (this.guards, cancelled_by_client) {
                (_, true) => cancelled(),
                (Guards::Handler, false) => {
                    if let Some(cancel) = this.cancel.as_ref() {
                        cancel.stop_at_deadline();
                    }
                    Status::deadline_exceeded(format!("deadline exceeded while {method} was running"))
                }
                (Guards::Chain, false) => Status::deadline_exceeded(format!(
                    "the interceptors of {method} had not ended {INTERCEPTOR_GRACE:?} after its deadline"
                )),
            };
            return Poll::Ready(Err(stop(this.inner, status)));
        }
        Poll::Pending
    }
}

std::thread_local! {
    /// While a stopped call's future is being dropped: the status it was stopped with.
    static STOPPED_WITH: std::cell::RefCell<Option<Status>> = const { std::cell::RefCell::new(None) };
}

/// Drops a stopped future, telling the [`OnEnd`](super::OnEnd)s inside it why; gives the
/// status back.
fn stop<F>(inner: Pin<&mut Option<F>>, status: Status) -> Status {
    let outer = STOPPED_WITH.with(|cell| cell.replace(Some(status.clone())));
    let mut inner = inner;
    inner.set(None);
    STOPPED_WITH.with(|cell| cell.replace(outer));
    status
}

/// While a call stopped at its deadline or by a cancel is dropped: the status it was
/// stopped with, for what reports on its end.
pub(crate) fn stopped_with() -> Option<Status> {
    STOPPED_WITH.with(|cell| cell.borrow().clone())
}

fn cancelled() -> Status {
    Status::cancelled("cancelled by the client")
}

/// What a panic said, when it said it with a string.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
