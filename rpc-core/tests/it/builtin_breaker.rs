//! Tests of the built-in breaker interceptor(s), over real sockets. (To be written.)
