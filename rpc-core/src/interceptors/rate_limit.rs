//! Rate and concurrency limits. (To be written.)

/// Token buckets per method, optionally per caller.
#[derive(Debug)]
pub struct RateLimit;

/// Sheds load past a number of calls in flight.
#[derive(Debug)]
pub struct ConcurrencyLimit;
