//! Tests of the built-in auth interceptor(s), over real sockets. (To be written.)
