//! Tests of the built-in retry interceptor(s), over real sockets. (To be written.)
