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
