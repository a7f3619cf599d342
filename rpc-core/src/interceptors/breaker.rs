//! The circuit breaker. (To be written.)

/// Fails calls fast while an endpoint or method keeps failing.
#[derive(Debug)]
pub struct CircuitBreaker;

/// What one breaker guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerScope {
    /// The channel's endpoint.
    Endpoint,
    /// Each method.
    Method,
}

/// A breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast.
    Open,
    /// A few probe calls go through.
    HalfOpen,
}
