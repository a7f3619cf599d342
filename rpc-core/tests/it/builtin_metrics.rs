//! Tests of the built-in metrics interceptor(s), over real sockets. (To be written.)
