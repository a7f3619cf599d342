//! Deadlines. (To be written.)

/// A default timeout, and a server's deadline carried into the calls its handler makes.
#[derive(Debug, Clone)]
pub struct Deadlines;
