//! Tests of the built-in deadline interceptor(s), over real sockets. (To be written.)
