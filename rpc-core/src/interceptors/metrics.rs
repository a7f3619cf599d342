//! Prometheus metrics. (To be written.)

/// Per-method counts, errors, in-flight calls and latencies, in Prometheus text format.
#[derive(Debug, Clone)]
pub struct Metrics;
