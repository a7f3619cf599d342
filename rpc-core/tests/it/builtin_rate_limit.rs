//! Tests of the built-in rate_limit interceptor(s), over real sockets. (To be written.)
