//! Retries. (To be written.)

/// Retries failed calls.
#[derive(Debug)]
pub struct Retry;
