//! Tests of the built-in tracing interceptor(s), over real sockets. (To be written.)
