//! Tracing and trace-context propagation. (To be written.)

/// A `tracing` span per call, and W3C trace context carried across calls.
#[derive(Debug, Clone)]
pub struct Tracing;

/// A W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext;
