//! The built-in interceptors: ordinary [interceptors](crate::interceptor) a user could have
//! written, for what every service needs.
//!
//! | interceptor | side | what it does |
//! |---|---|---|
//! | [`Deadlines`] | both | a default timeout; a server's deadline carried into the calls its handler makes |
//! | [`Retry`] | client | retries with exponential backoff and jitter, within a budget, never past the deadline |
//! | [`CircuitBreaker`] | client | fails fast while an endpoint or method keeps failing |
//! | [`RateLimit`], [`ConcurrencyLimit`] | server | token buckets per method (and caller); load shedding |
//! | `JwtAuth`, [`BearerToken`] | server, client | bearer tokens; JWT validation and roles (feature `jwt`) |
//! | `ClientCertAuth` | server | mutual TLS: which client certificates may call which methods (feature `tls`) |
//! | [`Tracing`] | both | a `tracing` span per call; W3C `traceparent` propagation |
//! | `Metrics` | both | Prometheus counters, gauges and histograms (feature `metrics`) |

mod auth;
mod breaker;
#[cfg(feature = "tls")]
mod client_cert;
mod deadline;
#[cfg(feature = "metrics")]
mod metrics;
mod rate_limit;
mod retry;
mod tracing;

pub use auth::BearerToken;
#[cfg(feature = "jwt")]
pub use auth::{Claims, InvalidJwtKey, JwtAuth};
pub use breaker::{BreakerScope, BreakerState, CircuitBreaker};
#[cfg(feature = "tls")]
pub use client_cert::ClientCertAuth;
pub use deadline::Deadlines;
#[cfg(feature = "metrics")]
pub use metrics::Metrics;
pub use rate_limit::{ConcurrencyLimit, RateLimit};
pub use retry::Retry;
pub use tracing::{SpanId, TraceContext, TraceId, Tracing};

use std::future::Future;

/// `future`, made to run in the context of the call this task is handling: its deadline
/// ([`Deadlines::current`]) and its trace ([`TraceContext::current`]). Both are task-local,
/// so work a handler hands to another task loses them; wrapped, the calls that work makes
/// through channels with [`Deadlines`] and [`Tracing`] still stop at the caller's deadline
/// and join its trace. Outside a call, `future` runs as it is.
pub fn in_call_context<F: Future>(future: F) -> impl Future<Output = F::Output> {
    deadline::carry(tracing::carry(future))
}

/// [`tokio::spawn`]s `future` in the context of the call this task is handling (see
/// [`in_call_context`]).
///
/// ```no_run
/// use rpc_core::middleware::spawn_in_call_context;
/// # async fn audit() {}
/// # async fn handler() {
/// // Inside a handler: the audit call runs under the caller's deadline and trace.
/// spawn_in_call_context(audit());
/// # }
/// ```
pub fn spawn_in_call_context<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_call_context(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spawned_work_keeps_the_trace_only_when_carried() {
        let root = TraceContext::root();
        let (carried, lost) = root
            .scope(async {
                let carried = spawn_in_call_context(async { TraceContext::current() }).await;
                let lost = tokio::spawn(async { TraceContext::current() }).await;
                (carried.expect("task"), lost.expect("task"))
            })
            .await;
        assert_eq!(carried.map(|trace| trace.trace_id()), Some(root.trace_id()));
        assert_eq!(lost, None, "a plain spawn loses it");
        assert_eq!(in_call_context(async { TraceContext::current() }).await, None, "outside a call: none");
    }
}
